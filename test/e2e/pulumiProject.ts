// Real Pulumi projects for the end-to-end suite: a directory with its own
// node_modules holding bpfleet installed from `npm pack` (exactly what a user
// installs), run by the real `pulumi` CLI with a local file backend.
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { execa, type Result } from "execa";

const REPO = resolve(__dirname, "../..");
const WORK = process.env.BPFLEET_E2E_DIR ?? "/tmp/bpfleet-e2e";
export const PASSPHRASE = "bpfleet-e2e-passphrase";

function pulumiBin(): string {
  const recorded = join(REPO, ".pulumi-bin-path");
  if (!existsSync(recorded)) throw new Error("the Pulumi CLI is not installed: run scripts/setup.sh first");
  return readFileSync(recorded, "utf8").trim();
}

let packed: Promise<string> | undefined;

/** `npm pack` of this repository, once per test process. */
export function packBpfleet(): Promise<string> {
  packed ??= (async () => {
    mkdirSync(WORK, { recursive: true });
    const r = await execa("npm", ["pack", "--silent", "--pack-destination", WORK], { cwd: REPO });
    return join(WORK, r.stdout.trim().split("\n").pop()!);
  })();
  return packed;
}

/**
 * An earlier release of bpfleet, for upgrade tests: commit `ref` of this repository
 * exported with `git archive` (no worktree), built with this checkout's node_modules
 * and packed, as a user would have installed it; and where its files are (its
 * examples). Once per ref and work directory.
 */
export async function packRelease(ref: string): Promise<{ tarball: string; dir: string }> {
  const sha = await execa("git", ["-C", REPO, "rev-parse", "--verify", `${ref}^{commit}`]).then(
    (r) => r.stdout.trim(),
    () => {
      throw new Error(`the release ${ref} is not in this clone's history (a shallow clone?): fetch it, or set the test's release variables`);
    },
  );
  const dir = join(WORK, `release-${sha.slice(0, 12)}`);
  const done = join(dir, ".packed");
  if (!existsSync(done)) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    await execa("sh", ["-c", 'git -C "$1" archive "$2" | tar -x -C "$3"', "sh", REPO, sha, dir]);
    symlinkSync(join(REPO, "node_modules"), join(dir, "node_modules"));
    const r = await execa("npm", ["pack", "--silent", "--pack-destination", dir], { cwd: dir });
    writeFileSync(done, `${r.stdout.trim().split("\n").pop()!}\n`);
  }
  return { tarball: join(dir, readFileSync(done, "utf8").trim()), dir };
}

export interface PulumiRun extends Result {
  stdout: string;
  stderr: string;
}

export class PulumiProject {
  readonly env: Record<string, string>;

  private constructor(readonly dir: string) {
    this.env = {
      PATH: `${pulumiBin()}:${process.env.PATH}`,
      PULUMI_BACKEND_URL: `file://${dir}/.state`,
      PULUMI_HOME: `${dir}/.pulumi-home`,
      PULUMI_CONFIG_PASSPHRASE: PASSPHRASE,
      PULUMI_SKIP_UPDATE_CHECK: "1",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      NO_COLOR: "1",
    };
  }

  /**
   * A project named `name` whose program is `programFile` (copied as index.ts),
   * with a fresh stack `dev`.
   */
  static async create(name: string, programFile: string, projectName = "bpfleet-quickstart", tarball?: string): Promise<PulumiProject> {
    const dir = join(WORK, name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(join(dir, ".state"), { recursive: true });
    const rootPackage = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8"));
    tarball ??= await packBpfleet();
    writeFileSync(join(dir, "Pulumi.yaml"), `name: ${projectName}\nruntime:\n  name: nodejs\n  options:\n    typescript: true\n`);
    writeFileSync(
      join(dir, "package.json"),
      JSON.stringify(
        {
          name,
          private: true,
          dependencies: { bpfleet: `file:${tarball}`, "@pulumi/pulumi": rootPackage.dependencies["@pulumi/pulumi"] },
          devDependencies: {
            "ts-node": rootPackage.devDependencies["ts-node"],
            typescript: rootPackage.devDependencies.typescript,
            "@types/node": rootPackage.devDependencies["@types/node"],
          },
        },
        null,
        2,
      ),
    );
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({ compilerOptions: { strict: true, target: "ES2022", module: "commonjs", moduleResolution: "node", esModuleInterop: true, skipLibCheck: true } }, null, 2));
    writeFileSync(join(dir, "index.ts"), readFileSync(programFile, "utf8"));
    await execa("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline"], { cwd: dir });
    const project = new PulumiProject(dir);
    await project.pulumi(["stack", "init", "dev", "--non-interactive"]);
    return project;
  }

  /**
   * Like create, with the program given as TypeScript source (written as the
   * project's index.ts), for tests whose program is too specific for examples/.
   */
  static async fromSource(name: string, source: string, projectName = "bpfleet-e2e"): Promise<PulumiProject> {
    mkdirSync(WORK, { recursive: true });
    const programFile = join(WORK, `${name}.program.ts`);
    writeFileSync(programFile, source);
    return PulumiProject.create(name, programFile, projectName);
  }

  /**
   * A project made of exactly the files given (name → content; no tsconfig.json
   * unless given), as a user writes them, with a fresh stack `dev`.
   */
  static async fromFiles(name: string, files: Record<string, string>): Promise<PulumiProject> {
    const dir = join(WORK, name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(join(dir, ".state"), { recursive: true });
    for (const [file, content] of Object.entries(files)) writeFileSync(join(dir, file), content);
    await execa("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline"], { cwd: dir });
    const project = new PulumiProject(dir);
    await project.pulumi(["stack", "init", "dev", "--non-interactive"]);
    return project;
  }

  /** Installs another bpfleet package (e.g. this checkout's, over an older release's). */
  async installBpfleet(tarball: string): Promise<void> {
    await execa("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline", `bpfleet@file:${tarball}`], { cwd: this.dir });
  }

  /** Runs the pulumi CLI in the project; never throws for a non-zero exit (assert on it). */
  async pulumi(args: string[], options: { timeoutMs?: number } = {}): Promise<PulumiRun> {
    const result = await execa("pulumi", [...args, "--non-interactive"], {
      cwd: this.dir,
      env: this.env,
      reject: false,
      timeout: options.timeoutMs ?? 600_000,
      all: true,
    });
    return result as PulumiRun;
  }

  /** Runs pulumi and throws with its whole output when it fails. */
  async ok(args: string[]): Promise<PulumiRun> {
    const result = await this.pulumi(args);
    if (result.exitCode !== 0) throw new Error(`pulumi ${args.join(" ")} failed (exit ${result.exitCode}):\n${result.stdout}\n${result.stderr}`);
    return result;
  }

  /** Sets a list in stack config, replacing what was there. */
  async setList(key: string, values: string[]): Promise<void> {
    await this.pulumi(["config", "rm", key]);
    for (const [i, value] of values.entries()) await this.ok(["config", "set", "--path", `${key}[${i}]`, value]);
  }

  async exportState(showSecrets = false): Promise<string> {
    return (await this.ok(["stack", "export", ...(showSecrets ? ["--show-secrets"] : [])])).stdout;
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
