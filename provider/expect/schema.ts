/**
 * The `expect` input of XdpFirewall, TcPolicy and MaglevService (issue 14), as
 * check() canonicalises it: a list of texts or objects (grammar.ts), any order,
 * duplicates allowed, or the canonical record kept in state; always
 * `{ "<canonical text>": "<outcome>" }` with sorted keys, so a preview shows one
 * `+`/`-` per expectation. A bad one is named by its index (or key) and reason,
 * as the other set-valued inputs report problems (provider/validation.ts
 * cidrSet, provider/tcPolicy/schema.ts ruleSet).
 */
import { z } from "zod";
import { parsePrefix } from "../cidr";
import { canonicalItems } from "../validation";
import {
  expectationText, ExpectationError, outcomeText, parseExpectation, parseExpectationText,
  type Expectation, type ExpectKind,
} from "./grammar";

/**
 * Every expectation is one BPF_PROG_TEST_RUN on the host inside the lockout
 * window, all of them in one SSH round trip; a thousand keeps that round trip
 * well inside the default 30 s revert window while covering any real fleet's
 * health checks, scrapes and peerings.
 */
export const MAX_EXPECTATIONS = 1000;

/** Sort key: hook, family, then addresses by bytes, ports, protocol, then the rest of the text. */
function sortKey(e: Expectation): string {
  const addr = (a: string) => Buffer.from(parsePrefix(a).bytes).toString("hex").padStart(32, "0");
  const port = (p: number | undefined) => String(p ?? 0).padStart(5, "0");
  return [e.hook, e.family, addr(e.destination), port(e.destinationPort), e.protocol, addr(e.source), port(e.sourcePort), e.reply ? 1 : 0].join(" ");
}

/**
 * The expectations of one resource kind. `{ "<canonical text>": "<outcome>" }`;
 * in the record form the value must be the outcome its key names.
 */
export function expectationSet(kind: ExpectKind) {
  return z
    .union([z.array(z.unknown()), z.record(z.string(), z.string())])
    .transform((raw, ctx) => {
      const canonical = canonicalItems(raw, ctx, {
        parse: (input) => parseExpectation(kind, input),
        text: expectationText,
        value: (e) => outcomeText(e.outcome),
        valueName: "the expectation's outcome",
        UserError: ExpectationError,
      });
      if (canonical.size > MAX_EXPECTATIONS) {
        ctx.addIssue({ code: "custom", message: `has ${canonical.size} expectations; at most ${MAX_EXPECTATIONS} run in one update's lockout window` });
      }
      const sorted = [...canonical.entries()].map(([text, e]) => ({ text, e, key: sortKey(e) }));
      sorted.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.text < b.text ? -1 : a.text > b.text ? 1 : 0));
      const out: Record<string, string> = {};
      for (const { text, e } of sorted) out[text] = outcomeText(e.outcome);
      return out;
    });
}

/**
 * Where an expectation sat in what the user wrote: `expect[2]` when it was a list
 * (the first element whose canonical text is `text`), else `expect["<text>"]`.
 */
export function expectationPath(kind: ExpectKind, raw: unknown, text: string): string {
  if (Array.isArray(raw)) {
    const index = raw.findIndex((input) => {
      try {
        return expectationText(parseExpectation(kind, input)) === text;
      } catch {
        return false;
      }
    });
    if (index >= 0) return `expect[${index}]`;
  }
  return `expect[${JSON.stringify(text)}]`;
}

/** The canonical record (state, check() output) back as expectations. */
export function expectationsOf(kind: ExpectKind, record: Record<string, string>): Expectation[] {
  return Object.keys(record).map((text) => parseExpectationText(kind, text));
}

// ---------------------------------------------------------------- rules across properties

export interface ExpectProblem {
  property: string;
  reason: string;
}

/**
 * MaglevService: an expectation that names a backend must be a packet to one
 * of the service's VIPs (address, port and protocol), of the VIP's family, and
 * the backend must be one of the service's. `vips`/`backends` are the canonical
 * records of provider/maglev/schema.ts (keys vipKey/backendKey). Returned as
 * { property: 'expect["<text>"]', reason } for dynamicAdapter.pathFailures.
 */
export function maglevExpectationProblems(
  expectations: Record<string, string>,
  vips: Record<string, { address: string; port: number; protocol: string }>,
  backends: Record<string, { address: string; port?: number }>,
  raw?: unknown,
): ExpectProblem[] {
  const problems: ExpectProblem[] = [];
  for (const text of Object.keys(expectations)) {
    const e = parseExpectationText("maglevService", text);
    if (!("backend" in e.outcome)) continue;
    const property = expectationPath("maglevService", raw, text);
    const add = (reason: string) => problems.push({ property, reason: `${property}: ${reason}` });
    const vip = Object.values(vips).find((v) => v.address === e.destination && v.port === e.destinationPort && v.protocol === e.protocol);
    if (!vip) {
      const sameAddress = Object.entries(vips).filter(([, v]) => v.address === e.destination).map(([k]) => k);
      const otherFamily = Object.values(vips).length > 0 && Object.values(vips).every((v) => (v.address.includes(":") ? 6 : 4) !== e.family);
      add(
        otherFamily
          ? `an IPv${e.family} packet cannot reach a VIP: every VIP of this service is IPv${e.family === 4 ? 6 : 4}`
          : `${e.protocol} to ${e.destination}:${e.destinationPort} is not a VIP of this service${sameAddress.length ? ` (${e.destination} has ${sameAddress.join(", ")})` : ""}, so the balancer passes it to the host instead of a backend`,
      );
      continue;
    }
    const want = e.outcome.backend;
    const matches = Object.values(backends).filter((b) => b.address === want.address && (want.port === undefined || b.port === want.port));
    if (matches.length === 0) add(`backend ${outcomeText(e.outcome).slice("backend ".length)} is not one of this service's backends`);
  }
  return problems;
}
