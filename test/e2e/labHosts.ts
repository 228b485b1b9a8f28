// A Pulumi project whose program manages the hosts of a test lab: the program
// reads the lab's lab.json (hosts, host keys, the lab's private key) from the
// stack config key `labFile`, and the suite tears down both when it ends.
import type { Lab } from "../lab/lab";
import type { PulumiProject } from "./pulumiProject";

/** Points the project's program at the lab's hosts; returns the project. */
export async function useLab(project: PulumiProject, lab: Lab): Promise<PulumiProject> {
  await project.ok(["config", "set", "labFile", lab.jsonPath]);
  return project;
}

/**
 * A suite's afterAll: destroys what the stack still holds, removes the stack and
 * the project's directory, then the lab; each only if the suite got that far.
 */
export async function tearDownLabProject(project: PulumiProject | undefined, lab: Lab | undefined): Promise<void> {
  if (project) {
    await project.pulumi(["destroy", "--yes", "--skip-preview"]);
    await project.pulumi(["stack", "rm", "dev", "--yes", "--force"]);
    project.remove();
  }
  await lab?.destroy();
}
