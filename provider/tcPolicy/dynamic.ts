/** Entry point the SDK's serialized provider requires by package name. */
import { dynamicProvider } from "../dynamicAdapter";
import { tcPolicyKind } from "./lifecycle";

export const provider = dynamicProvider(tcPolicyKind);
