/**
 * Boot-time restore: what a host needs to bring a resource back after a reboot
 * (bpffs is empty then, so every pin and attachment is gone) before anyone runs
 * Pulumi. Per resource, a restore script and a `bpftool batch` file of its map
 * entries under /var/lib/bpfleet/boot/<kind>/<name>/; one shared systemd unit,
 * bpfleet-restore.service, runs a fixed entry point that restores them all
 * before network-pre.target. The object itself is already on the host at its
 * content-addressed path. A chain member (xdpHook.ts) comes back with the
 * interface's dispatcher, whose object is kept in that cache too; the other
 * members are not restored here (their own Pulumi run puts them back). Every file is written to a temporary name and renamed
 * into place, so a host that loses power mid-write boots with the old file or
 * the new one, never half of one.
 */
import { createHash } from "node:crypto";
import { batchText, type MapOperation } from "./mapOperations";
import { objectRemotePath, uploadObject, type LocalObject } from "./objectUpload";
import type { PinLayout } from "./pins";
import { attachXdpCommand, type XdpMode } from "./xdpAttach";
import { shellQuote } from "./quote";
import type { ExecResult, SshSession } from "./ssh";
import { shellScript, shippedText } from "./shellScript";
import { runSteps, scriptStep, type ShellStep } from "./shellSteps";
import { chainMapPin, dispatcherDir, XDP_CHAIN_SLOTS } from "./xdpHook";

export const BOOT_DIR = "/var/lib/bpfleet/boot";
/** The fixed entry point the unit runs; it restores every resource persisted under BOOT_DIR. */
export const RESTORE_ENTRY = `${BOOT_DIR}/restore`;
export const UNIT_DIR = "/etc/systemd/system";
export const UNIT_NAME = "bpfleet-restore.service";
/** Where `systemctl enable` puts the unit's link, as its [Install] section says. */
export const UNIT_WANTS_DIR = `${UNIT_DIR}/sysinit.target.wants`;
/** How long a restore waits for its interface to appear (drivers load in parallel with early boot). */
export const INTERFACE_WAIT_SECONDS = 30;

/** What a resource needs to come back by itself after a reboot. */
export interface BootRestoreSpec {
  /** Resource kind as in pin paths, e.g. "xdp-firewall". */
  kind: string;
  /** Pin name; also names the resource's directory under BOOT_DIR. */
  name: string;
  layout: PinLayout;
  /** The object the program is loaded from (it is on the host at its content-addressed path). */
  object: LocalObject;
  /** Map writes applied right after the load: the resource's declared entries. */
  mapOperations: readonly MapOperation[];
  /** Attach the program to XDP on this interface, in this mode; undefined: load and fill only. */
  xdp: { interface: string; mode: XdpMode; chain?: ChainRestore } | undefined;
}

/** A chain member's place: its slot in the interface's chain and the dispatcher that runs the chain. */
export interface ChainRestore {
  /** The chainPriority, 0 to XDP_CHAIN_SLOTS - 1. */
  slot: number;
  /** The dispatcher's object (bpf/obj/xdp_dispatcher.bpf.o), kept at its content-addressed path. */
  dispatcher: LocalObject;
}

// Names end up in paths inside our scripts and in bpftool batch lines (unquoted there).
const SAFE_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
const SAFE_PIN_PATH = /^\/sys\/fs\/bpf\/[A-Za-z0-9_./-]+$/;

function assertSegment(what: string, value: string): void {
  if (!SAFE_SEGMENT.test(value)) throw new Error(`boot restore: unsafe ${what} ${JSON.stringify(value)} (letters, digits, '_' and '-' only)`);
}

/** The directory holding one resource's restore script and batch file. */
export function resourceBootDir(kind: string, name: string): string {
  assertSegment("kind", kind);
  assertSegment("name", name);
  return `${BOOT_DIR}/${kind}/${name}`;
}

/**
 * The batch file's name carries a digest of its text, and the restore script names
 * it: renaming the script into place switches object, entries and hook together.
 */
export function batchFileName(text: string): string {
  return `entries-${createHash("sha256").update(text).digest("hex").slice(0, 16)}.batch`;
}

/** The bpftool batch that refills a resource's maps after its program was loaded again. */
export function restoreBatchText(operations: readonly MapOperation[]): string {
  for (const o of operations) {
    if (!SAFE_PIN_PATH.test(o.map)) throw new Error(`boot restore: unsafe pin path for a bpftool batch: ${JSON.stringify(o.map)}`);
  }
  return batchText(operations);
}

function chainOf(spec: BootRestoreSpec): { iface: string; mode: XdpMode; chain: ChainRestore } | undefined {
  const chain = spec.xdp?.chain;
  if (!spec.xdp || !chain) return undefined;
  if (!Number.isInteger(chain.slot) || chain.slot < 0 || chain.slot >= XDP_CHAIN_SLOTS) {
    throw new Error(`boot restore: chain slot must be 0-${XDP_CHAIN_SLOTS - 1}, got ${chain.slot}`);
  }
  return { iface: spec.xdp.interface, mode: spec.xdp.mode, chain };
}

/** The quoted assignments at the top of a restore script: the only place values appear. */
export function restoreAssignments(spec: BootRestoreSpec, batchPath: string): string {
  const assign = (name: string, value: string) => `${name}=${shellQuote([value])}`;
  const member = chainOf(spec);
  return [
    assign("LABEL", `${spec.kind}/${spec.name}`),
    assign("DIR", spec.layout.dir),
    assign("OBJ", objectRemotePath(spec.object)),
    assign("BATCH", batchPath),
    assign("DEV", spec.xdp?.interface ?? ""),
    ...(member
      ? [
          assign("DISPATCHER_DIR", dispatcherDir(member.iface)),
          assign("DISPATCHER_OBJ", objectRemotePath(member.chain.dispatcher)),
          assign("CHAIN", chainMapPin(member.iface)),
          assign("SLOT", String(member.chain.slot)),
        ]
      : []),
  ].join("\n");
}

// The restore script's steps are pieces shipped in sh/boot-restore-*.sh, each with
// the prelude it calls in front (a chain member's gets the xdp chain section, as
// the provider's chain scripts do, so both take the same lock); only the attach
// line is built here, from argv.
const piece = (name: string) => shellScript(`boot-restore-${name}`).replace(/\n*$/, "\n");

/**
 * The per-resource restore script: load the object with its maps pinned where the
 * provider expects them, apply the batch, attach in the declared mode. Idempotent:
 * with the program pinned already it does nothing.
 */
export function resourceRestoreScript(spec: BootRestoreSpec, batchPath: string): string {
  const member = chainOf(spec);
  const attachFailed = ` || { say "attaching XDP to $DEV failed"; exit 1; }\n`;
  let steps: string;
  if (member) {
    const attachDispatcher = shellQuote(attachXdpCommand(member.iface, `${dispatcherDir(member.iface)}/prog`, member.mode));
    steps =
      piece("dispatcher-check") +
      piece("prepare") +
      piece("chain-enter") +
      piece("entries") +
      piece("chain-attach") +
      // Never with overwrite: a program attached since the check above stays, and the restore fails.
      `on_hook "$DEV" "$disp" || ${attachDispatcher}${attachFailed}`;
  } else {
    const attach = spec.xdp ? `${shellQuote(attachXdpCommand(spec.xdp.interface, `${spec.layout.dir}/prog_boot`, spec.xdp.mode))}${attachFailed}` : "";
    steps = piece("prepare") + piece("load") + piece("entries") + attach;
  }
  return (
    `#!/bin/sh\n# Written by bpfleet: restores ${spec.kind} ${spec.name} after a reboot${member ? `, as member ${member.chain.slot} of ${member.iface}'s XDP chain` : ""}. Run by ${RESTORE_ENTRY}.\n` +
    `PATH=$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n` +
    `WAIT_SECONDS=${INTERFACE_WAIT_SECONDS}\n` +
    `${restoreAssignments(spec, batchPath)}\n` +
    piece("begin") +
    steps +
    piece("finish")
  );
}

/** The fixed entry point (sh/boot-restore-entry.sh): every persisted resource, one failure not stopping the others. */
export function restoreEntryScript(): string {
  return shippedText("boot-restore-entry");
}

/**
 * The shared unit. Ordered like nftables.service (before network-pre.target, no
 * default dependencies, wanted by sysinit.target), so the host is filtering before
 * its network is configured; /var/lib/bpfleet must be mounted first. Shipped as
 * sh/bpfleet-restore.service.
 */
export function unitText(): string {
  return shippedText(UNIT_NAME.replace(/\.service$/, ""), ".service");
}

/**
 * Persists what brings `spec` back after a reboot, and installs and enables the
 * shared unit. The objects (the program's, and a chain member's dispatcher) and
 * the batch are only sent when not on the host yet.
 */
export async function persistBootRestore(session: SshSession, spec: BootRestoreSpec): Promise<void> {
  const boot = bootRestoreSteps(spec);
  const [present] = await runSteps(session, [boot.check]);
  const { uploads, step } = boot.persist(present!);
  for (const object of uploads) await uploadObject(session, object, false);
  await runSteps(session, [step]);
}

/**
 * persistBootRestore in steps, for a kind that carries them in larger execs: `check`
 * (which files are on the host: read with the kind's survey), then `persist`, given
 * its result: the objects to upload first (rarely any: the cache is shared by every
 * resource, but a cleaned one must not leave the restore without its objects) and
 * the step that writes the restore (the batch only when not there yet).
 */
export function bootRestoreSteps(spec: BootRestoreSpec): { check: ShellStep; persist(check: ExecResult): { uploads: LocalObject[]; step: ShellStep } } {
  const dir = resourceBootDir(spec.kind, spec.name);
  const batch = restoreBatchText(spec.mapOperations);
  const batchName = batchFileName(batch);
  const member = chainOf(spec);
  const objects = [spec.object, ...(member ? [member.chain.dispatcher] : [])];
  return {
    check: scriptStep("files-present", [`${dir}/${batchName}`, ...objects.map(objectRemotePath)]),
    persist(check) {
      const [present, ...objectsPresent] = check.stdout.split("\n").map((l) => l === "yes");
      const step = scriptStep(
        "boot-persist",
        {
          dir,
          batch: batchName,
          batch_on_stdin: present ? "no" : "yes",
          restore_text: resourceRestoreScript(spec, `${dir}/${batchName}`),
          entry: RESTORE_ENTRY,
          entry_text: restoreEntryScript(),
          unit: `${UNIT_DIR}/${UNIT_NAME}`,
          unit_text: unitText(),
          unit_link: `${UNIT_WANTS_DIR}/${UNIT_NAME}`,
        },
        present ? {} : { stdin: batch },
      );
      return { uploads: objects.filter((_, i) => !objectsPresent[i]), step };
    },
  };
}

/** Removes a resource's persisted restore; with none left, the unit and its enablement go too. */
export async function removeBootRestore(session: SshSession, kind: string, name: string): Promise<void> {
  await runSteps(session, [removeBootRestoreStep(kind, name)]);
}

export function removeBootRestoreStep(kind: string, name: string): ShellStep {
  return scriptStep("boot-remove", { boot: BOOT_DIR, dir: resourceBootDir(kind, name), unit_dir: UNIT_DIR, unit: UNIT_NAME, wants: UNIT_WANTS_DIR, entry: RESTORE_ENTRY });
}
