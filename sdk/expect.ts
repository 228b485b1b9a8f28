import type { ExpectationObject } from "../provider/expect/grammar";
import type { DeepInput } from "./inputs";

/**
 * One packet expectation as an object (provider/expect/grammar.ts, where each field
 * is documented); the text form `"tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass"` says the same.
 */
export type ExpectationArgs = DeepInput<ExpectationObject>;

/** What an expectation got on a host, as of the last create/update (outputs `expectResults`). */
export interface ExpectationResult {
  /** The outcome it must get: "pass", "drop", "backend 10.0.1.3". */
  wanted: string;
  /** What the probe saw. */
  got: string;
  met: boolean;
}
