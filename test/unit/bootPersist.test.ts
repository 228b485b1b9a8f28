// Persisting and removing a boot restore (sh/boot-persist.sh, sh/boot-remove.sh,
// sh/files-present.sh) run for real by the local sh in a scratch tree, with a fake
// systemctl (test/unit/fakes), in a private mount and PID namespace whose /run is a
// scratch directory: with /run/systemd/system there, systemd manages "this host".
import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { scriptArgs, shellScript } from "../../provider/remote/shellScript";

const FAKES = join(__dirname, "fakes");
const scratch = mkdtempSync(join(tmpdir(), "bpfleet-persist-unit-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let root = "";
beforeEach(() => {
  root = mkdtempSync(join(scratch, "t-"));
  for (const dir of ["fake", "run", "lib", "etc"]) mkdirSync(join(root, dir), { mode: 0o700 });
});

function run(name: string, args: Record<string, string> | string[], options: { systemd?: boolean; input?: string } = {}) {
  if (options.systemd) mkdirSync(join(root, "run", "systemd", "system"), { recursive: true });
  const isolate = '/bin/mount --bind "$1/run" /run && shift && exec "$@"';
  const positional = Array.isArray(args) ? args : scriptArgs(name, args);
  return spawnSync("unshare", ["-m", "-p", "-f", "--mount-proc", "--propagation", "private", "/bin/sh", "-c", isolate, "isolate", root, "sh", "-c", shellScript(name), "bpfleet", ...positional], {
    env: { PATH: `${FAKES}:/usr/sbin:/usr/bin:/sbin:/bin`, FAKE: join(root, "fake") },
    encoding: "utf8",
    input: options.input,
  });
}
const calls = () => (existsSync(join(root, "fake", "calls")) ? readFileSync(join(root, "fake", "calls"), "utf8") : "");
const mode = (path: string) => statSync(path).mode & 0o777;

function paths() {
  const boot = join(root, "lib", "bpfleet", "boot");
  return {
    boot,
    dir: join(boot, "xdp-firewall", "edge"),
    entry: join(boot, "restore"),
    unitDir: join(root, "etc", "system"),
    unit: join(root, "etc", "system", "bpfleet-restore.service"),
    wants: join(root, "etc", "system", "sysinit.target.wants"),
  };
}

function persist(batch: string, restoreText: string, options: { systemd?: boolean; input?: string } = {}, name = "edge") {
  const p = paths();
  const dir = join(p.boot, "xdp-firewall", name);
  return run(
    "boot-persist",
    {
      dir,
      batch,
      batch_on_stdin: options.input === undefined ? "no" : "yes",
      restore_text: restoreText,
      entry: p.entry,
      entry_text: "#!/bin/sh\necho entry\n",
      unit: p.unit,
      unit_text: "[Unit]\n",
      unit_link: join(p.wants, "bpfleet-restore.service"),
    },
    options,
  );
}

describe("boot persist and remove scripts", () => {
  it("writes the resource's files, the entry point, the unit and its link, and reloads systemd", () => {
    const p = paths();
    const result = persist("entries-1.batch", "#!/bin/sh\necho restore\n", { systemd: true, input: "map update x\n" });
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(readFileSync(join(p.dir, "restore.sh"), "utf8")).toBe("#!/bin/sh\necho restore\n");
    expect(mode(join(p.dir, "restore.sh"))).toBe(0o755);
    expect(readFileSync(join(p.dir, "entries-1.batch"), "utf8")).toBe("map update x\n");
    expect(readFileSync(p.entry, "utf8")).toBe("#!/bin/sh\necho entry\n");
    expect(mode(p.entry)).toBe(0o755);
    expect(readFileSync(p.unit, "utf8")).toBe("[Unit]\n");
    expect(mode(p.unit)).toBe(0o644);
    expect(readlinkSync(join(p.wants, "bpfleet-restore.service"))).toBe(p.unit);
    // Every directory of bpfleet's own is root's alone.
    for (const dir of [join(root, "lib", "bpfleet"), p.boot, join(p.boot, "xdp-firewall"), p.dir]) expect(mode(dir)).toBe(0o700);
    expect(calls()).toBe("systemctl daemon-reload\n");
    expect(readdirSync(p.dir).sort()).toEqual(["entries-1.batch", "restore.sh"]);
  });

  it("leaves unchanged files alone, drops an old batch, and reloads only for a changed unit", () => {
    const p = paths();
    expect(persist("entries-1.batch", "one\n", { systemd: true, input: "a\n" }).status).toBe(0);
    const before = statSync(join(p.dir, "restore.sh")).mtimeMs;
    writeFileSync(join(root, "fake", "calls"), "");
    expect(persist("entries-2.batch", "one\n", { systemd: true, input: "b\n" }).status).toBe(0);
    expect(statSync(join(p.dir, "restore.sh")).mtimeMs).toBe(before);
    expect(readdirSync(p.dir).sort()).toEqual(["entries-2.batch", "restore.sh"]);
    expect(calls()).toBe("");
    // The batch already there (batch_on_stdin no) is kept as it is.
    expect(persist("entries-2.batch", "two\n", { systemd: true }).status).toBe(0);
    expect(readFileSync(join(p.dir, "entries-2.batch"), "utf8")).toBe("b\n");
    expect(readFileSync(join(p.dir, "restore.sh"), "utf8")).toBe("two\n");
  });

  it("never calls systemctl where systemd does not manage the host", () => {
    expect(persist("entries-1.batch", "one\n", { input: "" }).status).toBe(0);
    expect(existsSync(paths().unit)).toBe(true);
    expect(calls()).toBe("");
  });

  it("refuses a boot directory others may write, writing nothing", () => {
    const p = paths();
    mkdirSync(join(root, "lib", "bpfleet"), { mode: 0o700 });
    mkdirSync(p.boot);
    spawnSync("chmod", ["0777", p.boot]);
    const result = persist("entries-1.batch", "one\n", { input: "" });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toMatch(/refusing .*boot: it is writable by group or others/);
    expect(readdirSync(p.boot)).toEqual([]);
    expect(existsSync(p.unit)).toBe(false);
  });

  it("remove takes the unit, its link and the entry point with the last resource only", () => {
    const p = paths();
    expect(persist("entries-1.batch", "one\n", { systemd: true, input: "" }).status).toBe(0);
    expect(persist("entries-1.batch", "other\n", { systemd: true, input: "" }, "other").status).toBe(0);
    writeFileSync(join(root, "fake", "calls"), "");
    const remove = (name: string) =>
      run("boot-remove", { boot: p.boot, dir: join(p.boot, "xdp-firewall", name), unit_dir: p.unitDir, unit: "bpfleet-restore.service", wants: p.wants, entry: p.entry }, { systemd: true });
    expect(remove("edge").status).toBe(0);
    expect(existsSync(p.dir)).toBe(false);
    expect(existsSync(p.unit)).toBe(true);
    expect(calls()).toBe("");
    expect(remove("other").status).toBe(0);
    expect([existsSync(p.unit), existsSync(p.entry), existsSync(p.boot), existsSync(p.wants)]).toEqual([false, false, false, false]);
    expect(() => lstatSync(join(p.wants, "bpfleet-restore.service"))).toThrow();
    expect(calls()).toBe("systemctl daemon-reload\n");
    // Nothing left to remove: nothing happens.
    expect(remove("other").status).toBe(0);
  });

  it("files-present answers yes or no per path, in order", () => {
    writeFileSync(join(root, "a"), "");
    const result = run("files-present", [join(root, "a"), join(root, "missing"), join(root, "run")]);
    expect(result.stdout).toBe("yes\nno\nno\n");
  });
});

describe("shipped boot files", () => {
  it("name the paths the provider uses (they were interpolated from these constants)", async () => {
    const { BOOT_DIR, RESTORE_ENTRY, restoreEntryScript, UNIT_NAME, unitText } = await import("../../provider/remote/bootRestore");
    expect(restoreEntryScript()).toContain(`run by ${UNIT_NAME}. Restores every resource persisted under ${BOOT_DIR}.\n`);
    expect(restoreEntryScript()).toContain(`for script in ${BOOT_DIR}/*/*/restore.sh; do\n`);
    expect(unitText()).toContain(`RequiresMountsFor=${BOOT_DIR}\nConditionPathExists=${RESTORE_ENTRY}\n`);
    expect(unitText()).toContain(`ExecStart=/bin/sh ${RESTORE_ENTRY}\n`);
  });
});
