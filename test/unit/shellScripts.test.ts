import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT_DIRS_FUNCTION } from "../../provider/remote/hostDirs";
import { preludeFunctions, preludeOf, SCRIPT_DIR, scriptArgs, shellScript, shellScriptCommand, withPrelude } from "../../provider/remote/shellScript";

const shipped = readdirSync(SCRIPT_DIR).filter((f) => f.endsWith(".sh"));
const scratch = mkdtempSync(join(tmpdir(), "bpfleet-sh-unit-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("shipped shell scripts", () => {
  it("has the shared prelude", () => {
    expect(shipped).toContain("prelude.sh");
  });

  const shellcheck = (args: string[], input?: string) => {
    const result = spawnSync("shellcheck", ["--shell=sh", "--format=gcc", ...args], { encoding: "utf8", input });
    if (result.error) throw new Error(`shellcheck could not run (${result.error.message}): run scripts/setup.sh (Debian package shellcheck); every shipped remote script must pass it`);
    return result;
  };

  it("shellcheck is installed and finds what it should", () => {
    const result = shellcheck(["-"], 'rm -rf $1/x\n');
    expect(result.stdout).toMatch(/SC2086/);
    expect(result.status).not.toBe(0);
  });

  it.each(shipped)("%s is shellcheck-clean", (file) => {
    const result = shellcheck([join(SCRIPT_DIR, file)]);
    expect(result.stdout + result.stderr).toBe("");
    expect(result.status).toBe(0);
  });
});

describe("script loader", () => {
  it("takes root_dirs from the prelude, whole", () => {
    expect(ROOT_DIRS_FUNCTION).toBe(preludeFunctions("root_dirs"));
    expect(ROOT_DIRS_FUNCTION.split("\n")[0]).toBe("root_dirs() {");
    expect(ROOT_DIRS_FUNCTION.split("\n").at(-1)).toBe("}");
    expect(ROOT_DIRS_FUNCTION).not.toMatch(/^\s*#/m);
  });

  it("refuses an unknown prelude function and a name that is not a plain script name", () => {
    expect(() => preludeFunctions("no_such_function")).toThrow(/defines no function no_such_function/);
    expect(() => shellScript("../prelude")).toThrow(/bad shell script name/);
    expect(() => shellScript("no-such-script")).toThrow(/no-such-script\.sh is missing/);
  });

  it("puts in front of a script the prelude functions it calls, and drops its comment lines", () => {
    const script = "# shellcheck shell=sh\n# $1: a directory\nset -e\nroot_dirs \"$1\"  # only root may write it\necho done\n";
    expect(withPrelude(script)).toBe(`${preludeFunctions("root_dirs")}\nset -e\nroot_dirs "$1"  # only root may write it\necho done\n`);
    expect(withPrelude("fallback=null\njson_or bpftool -j net show\n")).toBe(`${preludeFunctions("json_or")}\nfallback=null\njson_or bpftool -j net show\n`);
    // A name inside another word is not a call.
    expect(withPrelude("echo my_root_dirs json_or_null\n")).toBe("echo my_root_dirs json_or_null\n");
    execFileSync("sh", ["-n", "-c", withPrelude(script)]);
  });

  it("puts a whole section in front, and the sections it calls", () => {
    const chain = preludeOf('lock "$dev"');
    expect(chain.startsWith(preludeFunctions("root_dirs"))).toBe(true);
    for (const fn of ["lock", "id_of", "on_hook", "slot_id", "hook_id", "detach_hook", "leave"]) expect(chain).toContain(`\n${preludeFunctions(fn)}`);
    expect(chain).not.toContain("json_or");
    expect(preludeOf("echo nothing")).toBe("");
  });

  it("loads a shipped script by name, once", () => {
    expect(shellScript("prelude")).toBe(withPrelude(readFileSync(join(SCRIPT_DIR, "prelude.sh"), "utf8")));
    expect(shellScript("prelude")).toBe(shellScript("prelude"));
  });

  it("root_dirs makes a 0700 directory, tightens 0755, refuses a symlink and group write", () => {
    const run = (dir: string) => spawnSync("sh", ["-c", `${preludeFunctions("root_dirs")}\nroot_dirs "$1"`, "test", dir], { encoding: "utf8" });
    const made = join(scratch, "made");
    expect(run(made).status).toBe(0);
    expect(statSync(made).mode & 0o777).toBe(0o700);
    const wide = join(scratch, "wide");
    mkdirSync(wide);
    chmodSync(wide, 0o755);
    expect(run(wide).status).toBe(0);
    expect(statSync(wide).mode & 0o777).toBe(0o700);
    const link = join(scratch, "link");
    symlinkSync(made, link);
    expect(run(link)).toMatchObject({ status: 1, stderr: expect.stringMatching(/refusing .*link: it is a symlink or not a directory/) });
    const shared = join(scratch, "shared");
    mkdirSync(shared);
    chmodSync(shared, 0o775);
    expect(run(shared)).toMatchObject({ status: 1, stderr: expect.stringMatching(/writable by group or others \(mode 775\)/) });
  });

  it("applied-write records a set in root-only directories, whole; applied-read gives it back, or says absent", () => {
    const state = join(scratch, "applied-state");
    const dir = join(state, "applied");
    const write = (text: string) => spawnSync("sh", shellScriptCommand("applied-write", { state, dir, kind: "xdp-firewall", name: "fw" }).slice(1), { input: text, encoding: "utf8" });
    const read = () => execFileSync("sh", shellScriptCommand("applied-read", { path: join(dir, "xdp-firewall", "fw") }).slice(1)).toString();
    expect(read()).toBe("absent\n");
    expect(write("10.0.0.1/32\n192.0.2.0/24\n").status).toBe(0);
    expect(read()).toBe("present\n10.0.0.1/32\n192.0.2.0/24\n");
    for (const d of [state, dir, join(dir, "xdp-firewall")]) expect(statSync(d).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, "xdp-firewall", "fw")).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(dir, "xdp-firewall"))).toEqual(["fw"]);
    chmodSync(join(dir, "xdp-firewall"), 0o777);
    expect(write("")).toMatchObject({ status: 1, stderr: expect.stringMatching(/writable by group or others/) });
  });

  it("json_or prints the command's JSON, or the caller's fallback when it fails", () => {
    const script = `${preludeFunctions("json_or")}\nfallback=null; json_or echo '{"a":1}'; json_or false; fallback="[]"; json_or sh -c 'echo oops >&2; exit 3'`;
    expect(execFileSync("sh", ["-c", script]).toString()).toBe('{"a":1}\nnull\n[]\n');
  });

  it("maps named values onto the names a script assigns on its first line, and nothing else", () => {
    expect(scriptArgs("revert-disarm", { token: "t", guards: "/g" })).toEqual(["/g", "t"]);
    expect(() => scriptArgs("revert-disarm", { guards: "/g" })).toThrow(/takes guards, token; missing token/);
    expect(() => scriptArgs("revert-disarm", { guards: "/g", token: "t", extra: "x" })).toThrow(/unknown extra/);
    expect(() => scriptArgs("xdp-chain-enter", { dev: "eth0" })).toThrow(/does not name its arguments/);
  });

  it("every script that names its arguments assigns each one before anything else", () => {
    for (const file of shipped.filter((f) => f !== "prelude.sh")) {
      const first = readFileSync(join(SCRIPT_DIR, file), "utf8").split("\n").find((l) => l.trim() && !l.startsWith("#"))!;
      if (/^[a-z_]+=\$1 /.test(first)) expect(() => scriptArgs(file.replace(/\.sh$/, ""), {}), file).toThrow(/missing/);
    }
  });

  it("builds an argv whose values are positional arguments", () => {
    const argv = shellScriptCommand("prelude", ["a b", "'$(x)'"], "bpfleet-test");
    expect(argv.slice(0, 2)).toEqual(["sh", "-c"]);
    expect(argv.slice(3)).toEqual(["bpfleet-test", "a b", "'$(x)'"]);
  });
});
