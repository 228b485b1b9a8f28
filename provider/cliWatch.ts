/**
 * The Pulumi CLI starts every plugin, this dynamic provider too (through the shell
 * launcher pulumi-resource-pulumi-nodejs), in a process group of its own
 * (cmdutil.RegisterProcessGroup in the CLI's plugin.go), so a signal to the CLI's
 * group never reaches it, and a CLI killed with SIGKILL cannot stop it: the provider
 * and its launcher kept running, idle, with their SSH sessions open. The one thing the
 * CLI's death always does is close the pipe it holds on the plugin's stdin (execPlugin
 * takes cmd.StdinPipe() and never closes it while the plugin is in use), so the
 * provider exits when its stdin ends.
 */
import { fstatSync } from "node:fs";

const DYNAMIC_PROVIDER_MAIN = /[\\/]@pulumi[\\/]pulumi[\\/]cmd[\\/]dynamic-provider([\\/]index\.js)?$/;

let watching = false;

/** In the dynamic-provider process only (never in a test runner or a program): exit once the CLI is gone. */
export function exitWhenCliGone(): void {
  if (watching || !DYNAMIC_PROVIDER_MAIN.test(process.argv[1] ?? "")) return;
  let stdinIsPipe = false;
  try {
    stdinIsPipe = fstatSync(0).isFIFO();
  } catch {
    return;
  }
  if (!stdinIsPipe) return;
  watching = true;
  const gone = () => {
    process.stderr.write("bpfleet: the Pulumi CLI that started this provider is gone (its pipe closed); exiting\n");
    process.exit(1);
  };
  process.stdin.on("end", gone);
  process.stdin.on("close", gone);
  process.stdin.on("error", gone);
  process.stdin.on("data", () => undefined);
  process.stdin.resume();
}
