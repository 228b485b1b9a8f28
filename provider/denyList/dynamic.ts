/**
 * DenyList: a fleet's deny entries, held once (issue 10). It touches no host: its
 * state holds the entries (as one sorted text, one entry per line, so a preview shows
 * `+`/`-` per entry once), and the digest and count that each XdpFirewall given the
 * list carries instead of the entries. A list kind (provider/sharedList.ts).
 */
import { exitWhenCliGone } from "../cliWatch";
import { sharedListProvider } from "../sharedList";
import { denyListKind } from "./schema";

exitWhenCliGone();

export const provider = sharedListProvider(denyListKind);
