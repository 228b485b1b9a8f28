/**
 * What the e2e programs of a list kind bound on every lab host share (issue 10): the
 * program's opening (the lab's hosts and key from its file, `host` the first host, for a
 * README snippet written for one host) and the exported state's resources.
 */
import type { PulumiProject } from "./pulumiProject";

/** The program up to the snippet: `hostOf(h)` gives a lab host's connection, `host` the first's. */
const LAB_PROGRAM_OPENING = `import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

const config = new pulumi.Config();
const lab = JSON.parse(fs.readFileSync(config.require("labFile"), "utf8")) as { privateKeyPath: string; hosts: { name: string; address: string; hostKey: string }[] };
const privateKey = pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8"));
const hostOf = (h: { address: string; hostKey: string }) => ({ address: h.address, user: "root", hostKey: h.hostKey, privateKey });
const host = hostOf(lab.hosts[0]!);
`;

/**
 * A README snippet written for the first lab host, then `eachOtherHost` (a statement
 * using `h`, the host, and `hostOf(h)`) for every other host of the lab.
 */
export function labProgram(snippet: string, eachOtherHost: string): string {
  return `${LAB_PROGRAM_OPENING}
${snippet}
for (const h of lab.hosts.slice(1)) {
  ${eachOtherHost}
}
`;
}

export interface StateResource {
  type: string;
  urn: string;
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
}

/** The resources of the project's stack, as `pulumi stack export` gives them. */
export async function stateResources(project: PulumiProject): Promise<StateResource[]> {
  return JSON.parse(await project.exportState()).deployment.resources as StateResource[];
}
