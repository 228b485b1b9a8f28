import { describe, expect, it } from "vitest";
import { planWaves, waveOptionsSchema, type WaveOptions } from "../../provider/healthGate/waves";

const hosts = (n: number) => Array.from({ length: n }, (_, i) => `h${i + 1}`);
const sizes = (waves: string[][]) => waves.map((w) => w.length);

describe("planWaves", () => {
  it.each<[number, WaveOptions, number[]]>([
    [10, { canary: 1, size: 5 }, [1, 5, 4]],
    [10, { canary: 1, percent: 50 }, [1, 5, 4]],
    [10, {}, [1, 3, 3, 3]], // default: canary 1, 25 % of 10 rounded up
    [10, { canary: 0, size: 5 }, [5, 5]],
    [10, { canary: 2, size: 3 }, [2, 3, 3, 2]],
    [10, { canary: 10, size: 1 }, [10]],
    [10, { canary: 1, size: 10 }, [1, 9]],
    [10, { canary: 1, percent: 100 }, [1, 9]],
    [10, { canary: 1, percent: 1 }, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]],
    [10, { canary: 1, percent: 33.3 }, [1, 4, 4, 1]],
    [1, {}, [1]],
    [1, { canary: 0, size: 1 }, [1]],
    [3, { canary: 1, size: 1 }, [1, 1, 1]],
    [30, { canary: 3, percent: 20 }, [3, 6, 6, 6, 6, 3]],
  ])("%i hosts, %j -> waves of %j", (n, options, expected) => {
    const waves = planWaves(hosts(n), options);
    expect(sizes(waves)).toEqual(expected);
    // Every host exactly once, in the order given: the canary is the first host(s).
    expect(waves.flat()).toEqual(hosts(n));
  });

  it("is deterministic and keeps any element type", () => {
    const objects = hosts(4).map((name) => ({ name }));
    expect(planWaves(objects, { canary: 1, size: 2 })).toEqual([[{ name: "h1" }], [{ name: "h2" }, { name: "h3" }], [{ name: "h4" }]]);
    expect(planWaves(objects, { canary: 1, size: 2 })).toEqual(planWaves(objects, { canary: 1, size: 2 }));
  });

  it.each<[number, WaveOptions, RegExp]>([
    [10, { size: 0 }, /^size: must be at least 1/],
    [10, { size: 11 }, /^size: must be at most 10 \(the number of hosts\)/],
    [10, { size: 2.5 }, /^size: must be a whole number/],
    [10, { size: -1 }, /^size: must be at least 1/],
    [10, { percent: 0 }, /^percent: must be from 1 to 100/],
    [10, { percent: 101 }, /^percent: must be from 1 to 100/],
    [10, { percent: -5 }, /^percent: must be from 1 to 100/],
    [10, { size: 2, percent: 20 }, /^percent: give either size or percent, not both/],
    [10, { canary: -1 }, /^canary: must be 0 \(no canary wave\) or more/],
    [10, { canary: 11 }, /^canary: must be at most 10/],
    [10, { canary: 0.5 }, /^canary: must be a whole number/],
    [10, { waves: 3 } as WaveOptions, /waves/],
    [0, {}, /^hosts: a fleet needs at least one host/],
  ])("%i hosts, %j is refused: %s", (n, options, message) => {
    expect(() => planWaves(hosts(n), options)).toThrow(message);
  });

  it("the options schema alone reports the same rules, with the property path", () => {
    const result = waveOptionsSchema(4).safeParse({ size: 5 });
    expect(result.success).toBe(false);
    expect(result.error!.issues[0]!.path).toEqual(["size"]);
  });
});
