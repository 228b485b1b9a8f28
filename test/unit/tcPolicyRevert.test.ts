// The rollback (and revert timer) of a TcPolicy change, replayed on a model of the
// pinned maps: after the change's writes (all of them, or a prefix, as a batch that
// stopped), the restore writes must leave every map byte for byte as before,
// including tcpol_cfg's IPv4 peer filter bit (PEER4_FILTER).
import { describe, expect, it } from "vitest";
import type { MapEntry, MapOperation } from "../../provider/remote/mapOperations";
import { decodeConfig, MAPS, PEER4_FILTER, TRIE_MAPS, ZERO_CONFIG } from "../../provider/tcPolicy/codec";
import { restoreOperations } from "../../provider/tcPolicy/guard";
import { observePolicy, planPolicy, type DesiredPolicy } from "../../provider/tcPolicy/plan";
import { parseRuleText } from "../../provider/tcPolicy/schema";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** Where the maps are pinned (restoreOperations tells them by the pin path's last part). */
const pin = (map: string) => `/sys/fs/bpf/bpfleet/tc-policy/p/maps/${map}`;

/** The maps as the host holds them: pin path -> key (hex) -> value. */
type Store = Map<string, Map<string, Uint8Array>>;

function apply(store: Store, operations: readonly MapOperation[]): void {
  for (const o of operations) {
    let map = store.get(o.map);
    if (!map) store.set(o.map, (map = new Map()));
    if (o.op === "update") map.set(hex(o.key), o.value);
    else map.delete(hex(o.key));
  }
}

const dump = (store: Store, map: string): MapEntry[] => [...(store.get(pin(map)) ?? [])].map(([k, v]) => ({ key: Uint8Array.from(Buffer.from(k, "hex")), values: [v] }));
const raw = (store: Store, map: string) => dump(store, map).map((e) => ({ key: e.key, value: e.values[0]! }));
const text = (store: Store) => [...store].filter(([m]) => m !== pin(MAPS.hits)).map(([m, entries]) => `${m}: ${[...entries].map(([k, v]) => `${k}=${hex(v)}`).sort().join(" ")}`).sort().join("\n");

function plan(store: Store, texts: string[]) {
  const observed = observePolicy({ rules: raw(store, MAPS.rules), tries: Object.fromEntries(TRIE_MAPS.map((m) => [m, raw(store, m)])), config: store.get(pin(MAPS.config))?.values().next().value });
  const desired: DesiredPolicy = { rules: texts.map((t) => parseRuleText("ingress", t)), config: { ...ZERO_CONFIG, ingressDefault: "deny", stateful: true } };
  return planPolicy(desired, observed, pin).operations;
}

describe("restoreOperations", () => {
  // The pair the fault matrix (test/lab/faults.test.ts) updates between: the final
  // tcpol_cfg is the one before, while the peer filters change.
  const OLD = ["allow tcp 22", "allow tcp 8080"];
  const NEW = ["allow tcp 22", "allow tcp 8081", "allow udp 5000 from 10.0.0.0/8"];

  it("puts every map back as it was, the peer filter bit too, after the whole change or any prefix of it", () => {
    const store: Store = new Map();
    apply(store, plan(store, OLD));
    expect(decodeConfig(store.get(pin(MAPS.config))!.values().next().value!).skipTries & PEER4_FILTER).toBe(PEER4_FILTER);
    const before = text(store);
    const operations = plan(store, NEW);
    const restore = restoreOperations(new Map([MAPS.config, MAPS.rules, MAPS.peer4, ...TRIE_MAPS].map((m) => [pin(m), dump(store, m)])), operations);
    for (let n = 0; n <= operations.length; n++) {
      const replay: Store = new Map([...store].map(([m, entries]) => [m, new Map(entries)]));
      apply(replay, operations.slice(0, n));
      apply(replay, restore.deletes);
      apply(replay, restore.updates);
      expect(text(replay), `after ${n} of ${operations.length} writes`).toBe(before);
    }
  });
});
