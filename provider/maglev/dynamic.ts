/** Entry point the SDK's serialized provider requires by package name. */
import { dynamicProvider } from "../dynamicAdapter";
import { maglevServiceKind } from "./lifecycle";
import { checkMaglevService } from "./schema";

// check() adds the rules across properties (mode, families, table size) that
// the per-property schema cannot see.
export const provider = dynamicProvider({ ...maglevServiceKind, check: checkMaglevService });
