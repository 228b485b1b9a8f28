/** Entry point the SDK's serialized provider requires by package name. */
import { dynamicProvider } from "../dynamicAdapter";
import { healthGateKind } from "./lifecycle";

export const provider = dynamicProvider(healthGateKind);
