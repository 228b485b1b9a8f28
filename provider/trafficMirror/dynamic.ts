/** Entry point the SDK's serialized provider requires by package name. */
import { dynamicProvider } from "../dynamicAdapter";
import { trafficMirrorKind } from "./lifecycle";
import { checkTrafficMirror } from "./schema";

// check() adds the rule across properties (the target is not the mirrored interface).
export const provider = dynamicProvider({ ...trafficMirrorKind, check: checkTrafficMirror });
