/** Real packets between lab namespaces: the observable outcome every lab test asserts on. */
import type { Lab, LabClient, LabHost } from "./lab";

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
