/**
 * Turns a resource kind (schema + lifecycle) into a pulumi.dynamic.ResourceProvider.
 * `check` and `diff` are pure and never open SSH; the other methods talk to hosts.
 */
import type * as pulumi from "@pulumi/pulumi";
import type { z } from "zod";
import { exitWhenCliGone } from "./cliWatch";
import { packagedObject } from "./objects";
import { operations } from "./operations";
import type { HostConnection } from "./remote/hostSchema";
import { resourceId } from "./remote/resource";

/** What the engine sends in place of a value that is not known yet (during preview). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

export interface Kind<Inputs extends object, Outputs extends Inputs> {
  /** Kind name as in pin paths and IDs, e.g. "xdp-firewall". */
  readonly kind: string;
  /** Its parsed output is the kind's Inputs, so check() hands the lifecycle exactly that type. */
  readonly schema: z.ZodObject<z.ZodRawShape> & z.ZodType<Inputs>;
  /**
   * Checks that span several inputs (e.g. a rule limit over two lists), run on top
   * of the schema; default: checkInputs(schema, news) alone. `olds`: the inputs
   * check returned before, on an update (what the engine passes; empty on a create).
   */
  check?(news: Record<string, unknown>, olds?: Record<string, unknown>): pulumi.dynamic.CheckResult;
  /** Input properties whose change needs a new resource. */
  readonly replaceOn: readonly (keyof Inputs & string)[];
  /** Extra input-like facts that make an update necessary (e.g. a newer BPF object). */
  pendingChanges?(olds: Outputs, news: Inputs): string[];
  create(inputs: Inputs): Promise<{ id: string; outs: Outputs }>;
  /** undefined: the resource is gone from the host. */
  read(id: string, olds: Outputs): Promise<{ outs: Outputs; inputs: Inputs } | undefined>;
  update(id: string, olds: Outputs, news: Inputs): Promise<Outputs>;
  delete(id: string, olds: Outputs): Promise<void>;
}

/** What a kind that lives on a host (a pin directory of its own) writes; defineKind adds the rest. */
export interface HostKind<Inputs extends { host: HostConnection; name: string }, Outputs extends Inputs & { objectSha256: string }>
  extends Pick<Kind<Inputs, Outputs>, "kind" | "schema" | "check" | "replaceOn" | "delete"> {
  /** The packaged BPF object (objects.ts): outputs record its sha256, and a newer one is a pending change. */
  readonly object: string;
  /**
   * Every output that is not an input (the type insists on each): what read strips
   * from what it observed to report the inputs the host really has.
   */
  readonly outputOnly: Record<Exclude<keyof Outputs, keyof Inputs>, true>;
  /** What an update must fix beyond the inputs and the object. */
  pendingChanges?(olds: Outputs, news: Inputs): string[];
  /** Brings the host to `inputs` (create and update alike); `olds`: the state before, on update. */
  converge(inputs: Inputs, olds?: Outputs): Promise<Outputs>;
  /** What the host really has, or undefined when the resource is gone from it. */
  observe(olds: Outputs): Promise<Outputs | undefined>;
}

/**
 * A Kind from a HostKind: create and update both converge (so a run that died half
 * way converges on the next `up`), the ID names host, kind and pin name, a newer
 * packaged object is a pending change, and read's inputs are its outputs without
 * the output-only keys.
 */
export function defineKind<I extends { host: HostConnection; name: string }, O extends I & { objectSha256: string }>(spec: HostKind<I, O>): Kind<I, O> {
  const { object, outputOnly, converge, observe, pendingChanges, ...rest } = spec;
  return {
    ...rest,
    pendingChanges(olds, news) {
      const sha = packagedObject(object).sha256;
      const pending = olds.objectSha256 === sha ? [] : [`BPF object ${olds.objectSha256?.slice(0, 12)} -> ${sha.slice(0, 12)}`];
      return [...pending, ...(pendingChanges?.(olds, news) ?? [])];
    },
    async create(inputs) {
      return { id: resourceId(spec.kind, inputs), outs: await converge(inputs) };
    },
    async read(_id, olds) {
      const outs = await observe(olds);
      if (!outs) return undefined;
      const inputs: Record<string, unknown> = { ...outs };
      for (const key of Object.keys(outputOnly)) delete inputs[key];
      return { outs, inputs: inputs as I };
    },
    async update(_id, olds, news) {
      return converge(news, olds);
    },
  };
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);

export function containsUnknown(value: unknown): boolean {
  if (value === UNKNOWN) return true;
  if (Array.isArray(value)) return value.some(containsUnknown);
  if (value && typeof value === "object") return Object.values(value).some(containsUnknown);
  return false;
}

function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((text, part) => (typeof part === "number" ? `${text}[${part}]` : /^[A-Za-z_$][\w$]*$/.test(String(part)) ? `${text}${text ? "." : ""}${String(part)}` : `${text}[${JSON.stringify(String(part))}]`), "");
}

/**
 * Where an input the provider receives comes from in the SDK, when the two
 * names differ: the pin name is `pinName` there (`name` is the resource's own
 * name), and credentials are fields of `host` (the SDK splits them off so the
 * engine keeps them secret). A message names what the user wrote.
 */
const SDK_PATHS: readonly [RegExp, string][] = [
  [/^name(?=$|[.[])/, "pinName"],
  [/^(targets\[\d+\])\.name(?=$|[.[])/, "$1.pinName"],
  [/^credentials\[(\d+)\]/, "targets[$1].host"],
  [/^credentials(?=$|[.[])/, "host"],
];

/** The path as the user wrote it in the SDK (see SDK_PATHS). */
export function sdkPath(path: string): string {
  for (const [pattern, replacement] of SDK_PATHS) if (pattern.test(path)) return path.replace(pattern, replacement);
  return path;
}

/**
 * Turns problems found at a property path ("deny[0]", "backends[2].port")
 * into the engine's check failures. The engine prints a failure as
 * `property <p> value <inputs[p]> has a problem: <reason>`, looking `p` up as
 * a top-level input key: a path such as "deny[0]" is no key, and the user saw
 * "property deny[0] value {<nil>}" (issue 15). So the path, in the SDK's
 * names, starts the reason, and `property` is the top-level key only when
 * its value is a scalar under the same name in the SDK (the engine then shows
 * the value the user wrote); otherwise it is empty and the engine prints
 * "resource '<name>' has a problem: <reason>", rather than dumping a list of
 * a million entries, or a credential, after "value".
 */
export function checkFailures(problems: readonly { path: string; message: string }[], news: Record<string, unknown>): pulumi.dynamic.CheckFailure[] {
  return pathFailures(problems.map(({ path, message }) => ({ property: path, reason: `${path || "inputs"}: ${message}` })), news);
}

/**
 * Failures built as { property: <path>, reason: "<path>: ..." } (the rules
 * across properties that kinds check on top of the schema), reported the same
 * way: the reason's leading path in the SDK's names, `property` as above.
 */
export function pathFailures(issues: readonly { property: string; reason: string }[], news: Record<string, unknown>): pulumi.dynamic.CheckFailure[] {
  return issues.map(({ property: path, reason }) => {
    const shown = sdkPath(path);
    const key = /^[A-Za-z_$][\w$]*/.exec(path)?.[0] ?? "";
    const value = news[key];
    const scalar = value === undefined || value === null || ["string", "number", "boolean"].includes(typeof value);
    return {
      property: key !== "" && key === shown && scalar ? key : "",
      reason: path !== "" && reason.startsWith(path) ? `${shown}${reason.slice(path.length)}` : reason,
    };
  });
}

/**
 * Validates and canonicalises inputs. A property whose value is still unknown
 * (preview before its dependency exists) is passed through unchecked; it is
 * checked again when the real value arrives.
 */
export function checkInputs(schema: z.ZodObject<z.ZodRawShape>, news: Record<string, unknown>): pulumi.dynamic.CheckResult {
  const known: Record<string, unknown> = {};
  const unknown: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(news)) {
    // Only declared inputs: output placeholders and the serialized provider are not ours to check.
    if (!(key in schema.shape)) continue;
    (containsUnknown(value) ? unknown : known)[key] = value;
  }
  const knownKeys = Object.keys(schema.shape).filter((key) => !(key in unknown));
  const result = schema.pick(Object.fromEntries(knownKeys.map((key) => [key, true])) as never).safeParse(known);
  if (!result.success) {
    return { failures: checkFailures(result.error.issues.map((issue) => ({ path: formatPath(issue.path), message: issue.message })), news) };
  }
  return { inputs: { ...(result.data as Record<string, unknown>), ...unknown } };
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().filter((k) => (value as Record<string, unknown>)[k] !== undefined).map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export function diffInputs<I extends object, O extends I>(kind: Kind<I, O>, olds: O, news: I): pulumi.dynamic.DiffResult {
  const changed = Object.keys(kind.schema.shape).filter((key) => canonicalJson((olds as Record<string, unknown>)[key]) !== canonicalJson((news as Record<string, unknown>)[key]));
  const replaces = changed.filter((key) => kind.replaceOn.some((r) => key === r));
  const pending = kind.pendingChanges?.(olds, news) ?? [];
  return {
    changes: changed.length > 0 || pending.length > 0,
    replaces,
    // The replacement needs the same pins (and the same interface hook) as the original.
    deleteBeforeReplace: replaces.length > 0,
  };
}

/**
 * The provider of one kind, typed by it. `check` alone receives what the user
 * wrote, not yet the kind's inputs: the SDK's signature types it as Inputs.
 */
export type KindProvider<I, O> = Omit<pulumi.dynamic.ResourceProvider<I, O>, "check"> & {
  check(olds: unknown, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult<I>>;
};

export function dynamicProvider<I extends object, O extends I>(kind: Kind<I, O>): KindProvider<I, O> {
  exitWhenCliGone();
  // Host-touching operations are counted and their failures reported in one line (operations.ts).
  const host = operations(kind);
  return {
    check: async (olds, news) => (kind.check ? kind.check(news, isRecord(olds) && Object.keys(olds).length > 0 ? olds : undefined) : checkInputs(kind.schema, news)),
    diff: async (_id, olds, news) => diffInputs(kind, olds, news),
    create: async (inputs) => host.create(inputs),
    read: async (id, props) => {
      // The engine always sends the state it holds.
      const observed = await host.read(id, props!);
      if (!observed) return { id: "", props: {} as O };
      // The SDK types ReadResult.inputs as Outputs; the engine takes them as the inputs they are.
      return { id, props: observed.outs, inputs: observed.inputs as O };
    },
    update: async (id, olds, news) => ({ outs: await host.update(id, olds, news) }),
    delete: async (id, props) => host.delete(id, props),
  };
}
