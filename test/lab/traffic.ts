/** Real packets between lab namespaces: the observable outcome every lab test asserts on. */
import { execa } from "execa";
import { packagedObject } from "../../provider/objects";
import type { Lab, LabClient, LabHost, Run } from "./lab";

/** True when one ping from the client gets an answer from `address` within a second. */
export async function pingReaches(lab: Lab, client: LabClient | string, address: string): Promise<boolean> {
  const result = await lab.inClient(client, ["ping", "-n", "-c", "1", "-W", "1", address], { reject: false });
  return result.exitCode === 0;
}

/** True when a UDP datagram sent from the client arrives at a socket on the host. */
export async function udpReaches(lab: Lab, client: LabClient | string, host: LabHost, address: string, port = 9999): Promise<boolean> {
  const token = `bpfleet-${Math.random().toString(36).slice(2)}`;
  const receiver = lab.inHost(host, ["timeout", "3", "socat", "-u", `UDP6-RECV:${port},ipv6only=0`, "STDOUT"], { reject: false });
  await new Promise((r) => setTimeout(r, 300));
  const target = address.includes(":") ? `UDP6-SENDTO:[${address}]:${port}` : `UDP4-SENDTO:${address}:${port}`;
  for (let i = 0; i < 3; i++) {
    await lab.inClient(client, ["sh", "-c", `echo ${token} | socat -u STDIN ${target}`], { reject: false });
    await new Promise((r) => setTimeout(r, 100));
  }
  const received = await receiver;
  return String(received.stdout).includes(token);
}

/**
 * Lets frames a program on the host's eth0 sends back with XDP_TX reach the
 * bridge. On a veth, XDP_TX only delivers when the peer (the root-side bridge
 * port bfl<lab>-<host>) has an XDP program (GRO on the peer delivered some
 * frames and lost others in our runs), so this attaches an XDP_PASS program
 * there; a real NIC needs nothing of the kind. Loaded and attached with
 * bpftool, its pin dropped at once: the attachment holds the program, and the
 * veth's removal with the lab takes both; `ip link ... obj` would leave
 * iproute2's pin directories behind.
 */
export async function passXdpTxToBridge(lab: Lab, host: LabHost): Promise<void> {
  const peerPin = `/sys/fs/bpf/bpfleet-lab-${lab.name}-${host.name}-peer`;
  await execa("bpftool", ["prog", "load", packagedObject("empty_xdp").path, peerPin, "type", "xdp"]);
  try {
    await execa("bpftool", ["net", "attach", "xdpdrv", "pinned", peerPin, "dev", `bfl${lab.name}-${host.name}`]);
  } finally {
    await execa("rm", ["-f", peerPin]);
  }
}

/**
 * What one short TCP connection from `client` to address:port from source port
 * `sport` got back (a server that answers with its name, then closes), or ""
 * when nothing came back within `timeoutSeconds`.
 */
export async function tcpAnswer(lab: Lab, client: LabClient, address: string, port: number, sport: number, timeoutSeconds = 4): Promise<string> {
  const target = address.includes(":") ? `TCP6:[${address}]:${port}` : `TCP4:${address}:${port}`;
  const r = await lab.inClient(client, ["sh", "-c", `timeout ${timeoutSeconds} socat -u ${target},sourceport=${sport},reuseaddr STDOUT 2>/dev/null`], { reject: false });
  return String(r.stdout).trim();
}

/** tcpAnswer for `count` connections, one after the other, from source ports `fromPort` on. */
export async function tcpAnswers(lab: Lab, client: LabClient, address: string, port: number, fromPort: number, count: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push(await tcpAnswer(lab, client, address, port, fromPort + i));
  return out;
}

/**
 * Waits until a tcpdump started as `proc` says it listens (failing after 10 s,
 * naming `what`); the returned function lets `settleMs` pass so the last
 * packets are written, stops it with SIGINT and returns how it ended.
 */
export async function tcpdumpListening(proc: Run, what: string, settleMs: number): Promise<() => Promise<Awaited<Run>>> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tcpdump on ${what} did not start`)), 10_000);
    proc.stderr!.on("data", (d: Buffer) => {
      if (d.toString().includes("listening on")) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return async () => {
    await new Promise((r) => setTimeout(r, settleMs));
    proc.kill("SIGINT");
    return await proc;
  };
}
