// operations.ts: what a failed operation's one-line report says the host holds, from
// a read-back of a kind whose host half is faked here (the lab's fault matrix,
// test/lab/faults.test.ts, runs the same reports against real hosts).
import { describe, expect, it } from "vitest";
import { z } from "zod";
import type { Kind } from "../../provider/dynamicAdapter";
import { OperationError, operations } from "../../provider/operations";
import { RemoteCommandError } from "../../provider/remote/ssh";

interface Inputs {
  name: string;
  size: number;
}
interface Outputs extends Inputs {
  attachMode: string;
}

/** A kind whose delete fails at its third step and whose read-back finds `onHost`. */
function failingDelete(onHost: Outputs | undefined): Kind<Inputs, Outputs> {
  return {
    kind: "fake",
    schema: z.object({ name: z.string(), size: z.number() }) as unknown as Kind<Inputs, Outputs>["schema"],
    replaceOn: [],
    pendingChanges: (olds) => (olds.attachMode === "detached" ? ["the program is not on its hook (detached)"] : []),
    create: async () => ({ id: "x", outs: { name: "a", size: 1, attachMode: "driver" } }),
    read: async () => (onHost ? { outs: onHost, inputs: { name: onHost.name, size: onHost.size } } : undefined),
    update: async (_id, olds) => olds,
    delete: async () => {
      throw new RemoteCommandError("root@h", "rm -r pins", undefined, "the SSH connection was lost", { connectionLost: true, at: 3, step: "script (rm, rmdir)" });
    },
  };
}

const olds: Outputs = { name: "a", size: 1, attachMode: "driver" };

async function reportOf(kind: Kind<Inputs, Outputs>): Promise<OperationError> {
  const err = await operations(kind).delete("root@h/fake/a", olds).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(OperationError);
  return err as OperationError;
}

describe("a failed delete's report of what the host holds", () => {
  it("as before, when the read-back finds the same inputs and nothing newly pending", async () => {
    const err = await reportOf(failingDelete({ ...olds }));
    expect(err.hostState).toBe("as before");
    expect(err.message.split("\n")[0]).toMatch(/^root@h\/fake\/a: delete failed at step 3 \(script \(rm, rmdir\)\): .*it is as before\.$/);
  });

  it("not as before when only what the inputs cannot show changed (the program was taken off its hook)", async () => {
    const err = await reportOf(failingDelete({ ...olds, attachMode: "detached" }));
    expect(err.hostState).toBe("neither");
    expect(err.message.split("\n")[0]).toMatch(/delete failed at step 3 .*It is still on the host, changed \(the program is not on its hook \(detached\)\); the next `pulumi up` \(or destroy\) deletes it again\.$/);
  });

  it("gone, when the read-back finds nothing", async () => {
    expect((await reportOf(failingDelete(undefined))).hostState).toBe("gone");
  });
});
