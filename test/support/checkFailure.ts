import type * as pulumi from "@pulumi/pulumi";
import { expect } from "vitest";

/**
 * The check failure about `path` (as the SDK names it: "deny[0]", "pinName"),
 * asserting that the engine can print it: the engine looks `property` up as a
 * top-level input key (issue 15: "property deny[0] value {<nil>}"), so it is
 * that key when the path is a top-level scalar input, and empty otherwise,
 * with the path at the start of the reason either way.
 */
export function failureAt(result: pulumi.dynamic.CheckResult, path: string, news: Record<string, unknown>): pulumi.dynamic.CheckFailure {
  const failure = result.failures?.find((f) => f.reason.startsWith(`${path}:`));
  expect(failure, `no failure at ${path}: ${JSON.stringify(result.failures)}`).toBeDefined();
  const value = news[path];
  const topLevelScalar = /^[A-Za-z_$][\w$]*$/.test(path) && path in news && (value === null || typeof value !== "object");
  expect(failure!.property).toBe(topLevelScalar ? path : "");
  return failure!;
}
