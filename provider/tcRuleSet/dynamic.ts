/** Entry point the SDK's serialized provider requires by package name: TcRuleSet, a list kind (provider/sharedList.ts). */
import { exitWhenCliGone } from "../cliWatch";
import { sharedListProvider } from "../sharedList";
import { tcRuleSetKind } from "./schema";

exitWhenCliGone();

export const provider = sharedListProvider(tcRuleSetKind);
