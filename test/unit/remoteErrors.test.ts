// A failed remote command says in its first line which host, which step and why,
// for the causes issue 15 found reported as bare exit codes.
import { describe, expect, it } from "vitest";
import { shellAnd, shellQuote } from "../../provider/remote/quote";
import { describeStep, RemoteCommandError } from "../../provider/remote/ssh";

const HOST = "root@10.0.0.7:22";

function failure(command: string, code: number, stderr: string, options: { connectionLost?: boolean; at?: number } = {}): RemoteCommandError {
  return new RemoteCommandError(HOST, command, { code, stdout: "", stderr }, code < 0 ? "the connection closed without an exit status" : `exit code ${code}`, options);
}

describe("describeStep names what a command does", () => {
  it("argv commands: the tools and their subcommands", () => {
    expect(describeStep(shellAnd([["bpftool", "batch", "file", "-"]]))).toBe("bpftool batch");
    expect(describeStep(shellAnd([["ip", "link", "set", "dev", "eth0", "xdpdrv", "pinned", "/sys/fs/bpf/x"], ["mv", "-f", "a", "b"]]))).toBe("ip link, mv");
    expect(describeStep(shellQuote(["bpftool", "-j", "map", "dump", "pinned", "/sys/fs/bpf/x"]))).toBe("bpftool map dump");
  });

  it("scripts: the tools they run, not their messages or shell functions", () => {
    const script = `
set -e
say() { echo "bpftool says $1" >&2; }
mkdir -p "$1"
cat > "$1/x" || { echo "cannot write: rm it" >&2; exit 3; }
setsid sh -c 'sleep 1' &`;
    expect(describeStep(shellQuote(["sh", "-c", script, "bpfleet", "/run/x"]))).toBe("script (mkdir, cat, setsid)");
  });
});

describe("RemoteCommandError: host, step and cause in the first line", () => {
  it("a full map (exit code 228 from bpftool batch)", () => {
    const err = failure(shellAnd([["bpftool", "batch", "file", "-"]]), 228, "Error: update failed: No space left on device\nError: error on line 262145\n");
    expect(err.message.split("\n")[0]).toBe(`${HOST}: bpftool batch: a BPF map is full (No space left on device): the change needs more entries than the map holds (exit code 228)`);
  });

  it("a full disk (cat: write error)", () => {
    const err = failure(shellQuote(["sh", "-c", 'mkdir -p "$1"; cat > "$1/o"', "bpfleet", "/var/lib/bpfleet"]), 1, "cat: write error: No space left on device\n");
    expect(err.message.split("\n")[0]).toBe(`${HOST}: script (mkdir, cat): the host's disk is full (No space left on device) (exit code 1)`);
  });

  it("another XDP program already attached (exit code 240)", () => {
    const err = failure(shellAnd([["ip", "link", "set", "dev", "eth0", "xdpdrv", "pinned", "/p"]]), 240, "Error: XDP program already attached.\n");
    expect(err.message.split("\n")[0]).toMatch(/^root@10\.0\.0\.7:22: ip link: the interface already has an XDP program attached .*\(exit code 240\)$/);
  });

  it("a chain slot taken by a racing stack (exit code 5 after a script): the host's reason, not the script", () => {
    const script = 'lock "$1"\n[ -n "$mine" ] || { echo "chain slot $slot of $dev holds program id $held" >&2; exit 5; }\nbpftool map update pinned "$2" key 0 0 0 0 value 1 0 0 0';
    const err = failure(shellQuote(["sh", "-c", script, "bpfleet", "eth0"]), 5, "chain slot 1 of eth0 holds program id 812\n");
    const first = err.message.split("\n")[0]!;
    expect(first).toBe(`${HOST}: script (bpftool map update): chain slot 1 of eth0 is held by another program (id 812): another stack or resource claimed the same chainPriority (exit code 5)`);
    expect(first).not.toContain("lock");
  });

  it("the SSH connection cut mid-command (was exit code -1)", () => {
    const err = failure(shellAnd([["bpftool", "batch", "file", "-"]]), -1, "", { connectionLost: true, at: 4 });
    expect(err.message.split("\n")[0]).toBe(
      `${HOST}: bpftool batch: the SSH connection was lost while the command ran (the connection closed without an exit status); it may or may not have completed on the host`,
    );
    expect(err.connectionLost).toBe(true);
    expect(err.at).toBe(4);
  });

  it("an unknown cause: the exit code spelled out when it is an errno, and the host's last words", () => {
    const err = failure(shellAnd([["ip", "link", "set", "dev", "eth0", "up"]]), 234, "libbpf: noise\nError: Invalid argument\n");
    expect(err.message.split("\n")[0]).toBe(`${HOST}: ip link: exit code 234 (EINVAL: invalid argument): Invalid argument`);
    // The command and the full stderr stay below the first line.
    expect(err.message).toContain("\n  command: ip link set dev eth0 up");
    expect(err.message).toContain("\n  stderr: libbpf: noise");
  });
});
