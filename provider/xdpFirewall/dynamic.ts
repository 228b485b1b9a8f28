/** Entry point the SDK's serialized provider requires by package name. */
import { dynamicProvider } from "../dynamicAdapter";
import { xdpFirewallKind } from "./lifecycle";

export const provider = dynamicProvider(xdpFirewallKind);
