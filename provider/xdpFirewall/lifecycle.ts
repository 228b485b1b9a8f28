/**
 * XdpFirewall on a host: create, read, update, delete. Entries change in place
 * (maps written, never detached); a new BPF object is swapped in atomically
 * against the same pinned maps; another program on the interface is never
 * replaced.
 */
import { parsePrefix, prefixContains } from "../cidr";
import type { Kind } from "../dynamicAdapter";
import { packagedObject } from "../objects";
import {
  applyMapOperations,
  attachXdpCommand,
  batchText,
  detachXdp,
  dumpMaps,
  HostPreconditionError,
  loadProgram,
  pinLayout,
  preflight,
  programState,
  removePins,
  requireInterface,
  requireProgramType,
  surveyResource,
  uploadObject,
  type MapOperation,
  type PinLayout,
  type ResourceSurvey,
  type XdpAttachment,
} from "../remote/bpfHost";
import { hostLabel } from "../remote/hostSchema";
import { shellQuote } from "../remote/quote";
import { armRevert, type RevertTimer } from "../remote/revertTimer";
import { dropSession, freshLogin, sessionFor, type SshSession } from "../remote/ssh";
import { sortedRecord } from "../validation";
import { sumCounters } from "../counters";
import { decodeDenyEntry, DENY_MAPS, STATS_MAP } from "./codec";
import { denyOperations, planDeny } from "./plan";
import { xdpFirewallSchema, type XdpFirewallInputs, type XdpFirewallOutputs } from "./schema";

const KIND = "xdp-firewall";
const OBJECT = "xdp_firewall";

function firewallId(inputs: XdpFirewallInputs): string {
  return `${hostLabel(inputs.host)}/${KIND}/${inputs.name}`;
}

async function connect(inputs: XdpFirewallInputs): Promise<{ session: SshSession; layout: PinLayout }> {
  const session = await sessionFor(inputs.host, inputs.credentials);
  return { session, layout: pinLayout(KIND, inputs.name) };
}

interface ObservedProgram {
  programId: number;
  programTag: string;
  attachment: XdpAttachment | undefined;
  counters: XdpFirewallOutputs["counters"];
}

interface Observed extends ObservedProgram {
  deny: Record<string, "deny">;
}

/** The loaded program, its attachment and counters, or undefined when the firewall's pins are gone. */
async function observeProgram(session: SshSession, layout: PinLayout, iface: string): Promise<ObservedProgram | undefined> {
  const state = await programState(session, iface, layout, STATS_MAP);
  if (!state.program) return undefined;
  const pass = sumCounters(state.stats[0]?.values ?? []);
  const drop = sumCounters(state.stats[1]?.values ?? []);
  return {
    programId: state.program.id,
    programTag: state.program.tag,
    attachment: state.xdp?.programId === state.program.id ? state.xdp : undefined,
    counters: { passPackets: pass.packets, passBytes: pass.bytes, dropPackets: drop.packets, dropBytes: drop.bytes },
  };
}

/** The deny entries really in the host's maps. */
async function observeEntries(session: SshSession, layout: PinLayout): Promise<Record<string, "deny">> {
  const dumps = await dumpMaps(session, DENY_MAPS.map((m) => `${layout.maps}/${m}`));
  const entries: string[] = [];
  for (const map of DENY_MAPS) {
    for (const entry of dumps.get(`${layout.maps}/${map}`) ?? []) entries.push(decodeDenyEntry(map, entry.key));
  }
  return sortedRecord(entries, "deny" as const);
}

/** Everything `read` reports, or undefined when the firewall is gone from the host. */
async function observe(session: SshSession, layout: PinLayout, iface: string): Promise<Observed | undefined> {
  const program = await observeProgram(session, layout, iface);
  return program && { ...program, deny: await observeEntries(session, layout) };
}

function outputsOf(inputs: XdpFirewallInputs, observed: Observed, objectSha256: string): XdpFirewallOutputs {
  return {
    ...inputs,
    deny: observed.deny,
    attached: observed.attachment !== undefined,
    objectSha256,
    programId: observed.programId,
    programTag: observed.programTag,
    attachMode: observed.attachment?.mode ?? "detached",
    counters: observed.counters,
  };
}

/**
 * Refuses to take over an interface whose XDP hook holds a program this resource
 * did not attach; returns the attachment when it is ours.
 */
function claimInterface(session: SshSession, survey: ResourceSurvey, iface: string): XdpAttachment | undefined {
  const attachment = survey.xdp;
  if (!attachment) return undefined;
  if (survey.program && survey.program.id === attachment.programId) return attachment;
  throw new HostPreconditionError(
    `${session.label}: interface ${iface} already has XDP program id ${attachment.programId} attached (${attachment.mode} mode), which this firewall did not attach. ` +
      `bpfleet never replaces another program: detach it first (e.g. 'ip link set dev ${iface} xdp off') or pick another interface.`,
  );
}

/** Refuses deny entries that would drop this provider's own SSH session. */
async function refuseManagementDeny(session: SshSession, inputs: XdpFirewallInputs): Promise<void> {
  if (inputs.allowManagementDeny || !inputs.attached) return;
  const peer = await session.managementPeer();
  if (!peer) return;
  let address;
  try {
    address = parsePrefix(peer.replace(/^::ffff:/, ""));
  } catch {
    return;
  }
  const covering = Object.keys(inputs.deny).filter((entry) => prefixContains(parsePrefix(entry), address));
  if (covering.length > 0) {
    throw new HostPreconditionError(
      `${session.label}: deny entr${covering.length === 1 ? "y" : "ies"} ${covering.join(", ")} would drop ${peer}, the address this provider's SSH session comes from, and lock the host out of management. ` +
        `Remove the entry, or set allowManagementDeny: true if another path manages this host. Nothing was changed.`,
    );
  }
}

/**
 * What the host runs if the revert timer fires: restore the entries, and put the
 * hook back as it was (detach a program that was not attached before, or reattach
 * the previous one). Every value is quoted; each step runs even if one fails.
 */
function revertScript(layout: PinLayout, iface: string, inverse: MapOperation[], hook: "remove" | "restore-previous" | "keep"): string {
  const lines = [`P=${shellQuote([layout.program])}`, `DEV=${shellQuote([iface])}`];
  if (inverse.length > 0) lines.push(`bpftool batch file - <<'BPFLEET_BATCH'\n${batchText(inverse)}BPFLEET_BATCH`);
  if (hook === "remove") {
    lines.push(
      `id=$(bpftool -j prog show pinned "$P" 2>/dev/null | grep -o '"id":[0-9]*' | head -n 1 | cut -d: -f2)`,
      `if [ -n "$id" ] && bpftool -j net show dev "$DEV" | grep -q "\"id\":$id[,}]"; then ip link set dev "$DEV" xdpgeneric off; ip link set dev "$DEV" xdpdrv off; fi 2>/dev/null`,
      `rm -rf -- ${shellQuote([layout.dir])}`,
    );
  } else if (hook === "restore-previous") {
    lines.push(`bpftool net attach xdp pinned "$P"_old dev "$DEV" overwrite || bpftool net attach xdpgeneric pinned "$P"_old dev "$DEV" overwrite`, `mv -f "$P"_old "$P"`);
  }
  return `${lines.join("\n")}\n`;
}

async function loginWorks(inputs: XdpFirewallInputs, timeoutMs: number): Promise<Error | undefined> {
  try {
    await freshLogin({ ...inputs.host, connectTimeoutMs: timeoutMs }, inputs.credentials);
    return undefined;
  } catch (err) {
    return err as Error;
  }
}

/** After a fresh login failed: waits for the host to come back by itself (its revert timer) and says what happened. */
async function reportLockout(session: SshSession, inputs: XdpFirewallInputs, peer: string | undefined, failure: Error): Promise<never> {
  dropSession(inputs.host, inputs.credentials);
  const deadline = Date.now() + (inputs.lockoutRevertSeconds + 20) * 1000;
  let back = false;
  while (!back && Date.now() < deadline) back = (await loginWorks(inputs, 5000)) === undefined;
  throw new HostPreconditionError(
    `${session.label}: after the change, a fresh SSH login failed (${failure.message.split("\n")[0]}): the change cuts the management path ` +
      `(SSH from ${peer ?? "the provider"} over ${inputs.interface}). The revert timer armed before the change ` +
      (back ? `undid it and the host is reachable again.` : `undoes it within ${inputs.lockoutRevertSeconds} s; the host was not reachable again yet.`) +
      ` Nothing was recorded as applied. Check the deny entries against the addresses this host is managed from.`,
  );
}

/**
 * Brings the host to `inputs`. Used by create and update alike, so a half-finished
 * earlier run (pins left, program not attached) converges on the next `up`.
 */
async function converge(inputs: XdpFirewallInputs, previousSha?: string): Promise<XdpFirewallOutputs> {
  const { session, layout } = await connect(inputs);
  const object = packagedObject(OBJECT);
  await preflight(session);
  await requireProgramType(session, "xdp");
  const survey = await surveyResource(session, inputs.interface, layout, object);
  requireInterface(session, survey, inputs.interface);
  await refuseManagementDeny(session, inputs);
  const attachment = claimInterface(session, survey, inputs.interface);
  const hadPins = survey.program !== undefined;
  const needsLoad = !hadPins || previousSha !== object.sha256;
  const mapPin = (map: string) => `${layout.maps}/${map}`;
  const plan = planDeny(Object.keys(inputs.deny), Object.keys(hadPins ? await observeEntries(session, layout) : {}));
  const attachesNew = inputs.attached && (needsLoad || !attachment);
  const changesTraffic = plan.add.length + plan.remove.length > 0 || attachesNew;
  const guarded = inputs.lockoutGuard && changesTraffic && survey.managementInterface === inputs.interface;
  const swapsProgram = needsLoad && hadPins;

  let newProgram: string | undefined;
  let timer: RevertTimer | undefined;
  try {
    if (needsLoad) newProgram = await loadProgram(session, layout, await uploadObject(session, object, survey.objectPresent), "xdp");
    if (guarded) {
      const hook = !hadPins ? "remove" : swapsProgram && attachment ? "restore-previous" : attachesNew ? "remove" : "keep";
      const inverse = hadPins ? denyOperations({ add: plan.remove, remove: plan.add }, mapPin) : [];
      timer = await armRevert(session, revertScript(layout, inputs.interface, inverse, hook), inputs.lockoutRevertSeconds);
    }
    await applyMapOperations(session, denyOperations(plan, mapPin));
    if (newProgram) {
      await session.run([
        ...(inputs.attached ? [attachXdpCommand(inputs.interface, newProgram, inputs.mode, attachment)] : []),
        // The previous program stays pinned as prog_old until the change is proven.
        ...(swapsProgram ? [["mv", "-f", layout.program, `${layout.program}_old`]] : []),
        ["mv", "-f", newProgram, layout.program],
      ]);
    } else if (inputs.attached && !attachment) {
      await session.run(attachXdpCommand(inputs.interface, layout.program, inputs.mode));
    }
    if (!inputs.attached && attachment) await detachXdp(session, inputs.interface, attachment);
  } catch (err) {
    // Leave the host as it was: a fresh firewall that never attached is removed whole;
    // an existing one keeps its program (the staged one is dropped).
    await timer?.disarm().catch(() => undefined);
    // The same steps the revert timer would run: detach what we attached, drop the pins.
    if (!hadPins) await session.run(["sh", "-c", revertScript(layout, inputs.interface, [], "remove")]).catch(() => undefined);
    else if (newProgram) await session.run(["rm", "-f", newProgram]).catch(() => undefined);
    throw err;
  }
  if (timer) {
    const failure = await loginWorks(inputs, Math.min(inputs.host.connectTimeoutMs, (inputs.lockoutRevertSeconds * 1000) / 2));
    if (failure) await reportLockout(session, inputs, await session.managementPeer(), failure);
    await timer.disarm();
  }
  if (swapsProgram) await session.run(["rm", "-f", `${layout.program}_old`]);
  // bpftool batch stops at the first failed write, so after it succeeded the maps hold
  // exactly the desired entries: only the program side is read back.
  const program = await observeProgram(session, layout, inputs.interface);
  if (!program) throw new Error(`${session.label}: the firewall's pins vanished right after it was applied`);
  return outputsOf(inputs, { ...program, deny: inputs.deny }, object.sha256);
}

export const xdpFirewallKind: Kind<XdpFirewallInputs, XdpFirewallOutputs> = {
  kind: KIND,
  schema: xdpFirewallSchema,
  replaceOn: ["host", "interface", "name", "mode"],

  pendingChanges(olds) {
    const sha = packagedObject(OBJECT).sha256;
    return olds.objectSha256 === sha ? [] : [`BPF object ${olds.objectSha256?.slice(0, 12)} -> ${sha.slice(0, 12)}`];
  },

  async create(inputs) {
    return { id: firewallId(inputs), outs: await converge(inputs) };
  },

  async read(_id, olds) {
    const { session, layout } = await connect(olds);
    const observed = await observe(session, layout, olds.interface);
    if (!observed) return undefined;
    const outs = outputsOf(olds, observed, olds.objectSha256);
    const { objectSha256: _sha, programId: _id2, programTag: _tag, attachMode: _mode, counters: _c, ...inputs } = outs;
    return { outs, inputs };
  },

  async update(_id, olds, news) {
    return converge(news, olds.objectSha256);
  },

  async delete(_id, olds) {
    const { session, layout } = await connect(olds);
    const state = await programState(session, olds.interface, layout, STATS_MAP);
    // Detach only what this firewall attached; whatever else is on the hook stays.
    if (state.program && state.xdp?.programId === state.program.id) await detachXdp(session, olds.interface, state.xdp);
    await removePins(session, layout);
  },
};
