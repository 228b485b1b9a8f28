/** Entry point the SDK's serialized provider requires by package name: MirrorFilterSet, a list kind (provider/sharedList.ts). */
import { exitWhenCliGone } from "../cliWatch";
import { sharedListProvider } from "../sharedList";
import { mirrorFilterSetKind } from "./schema";

exitWhenCliGone();

export const provider = sharedListProvider(mirrorFilterSetKind);
