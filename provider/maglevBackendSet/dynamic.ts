/** Entry point the SDK's serialized provider requires by package name: MaglevBackendSet, a list kind (provider/sharedList.ts). */
import { exitWhenCliGone } from "../cliWatch";
import { sharedListProvider } from "../sharedList";
import { maglevBackendSetKind } from "./schema";

exitWhenCliGone();

export const provider = sharedListProvider(maglevBackendSetKind);
