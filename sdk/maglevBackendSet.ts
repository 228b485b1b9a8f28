import type * as pulumi from "@pulumi/pulumi";
import type { Backend } from "../provider/maglev/schema";
import { canonicalBackendSet } from "../provider/maglevBackendSet/schema";
import type { MaglevBackendArgs } from "./maglevService";
import { SharedList } from "./sharedList";

export interface MaglevBackendSetArgs {
  /**
   * MaglevService backends, as objects ({ address, port?, weight?, mac? }), addresses, or
   * lines ("10.0.0.3 weight 2", "[2001:db8::2]:8080 mac 02:00:00:00:00:0a"), any order, at
   * most 4095. Held once in the stack's state, canonical and sorted, one backend per
   * line: `pulumi preview --diff` shows each added, removed or changed backend once, and
   * the services that bind the set show only its digest and count changing.
   */
  backends: pulumi.Input<pulumi.Input<string | MaglevBackendArgs>[]>;
}

/**
 * MaglevService backends shared by many balancers, held once (issue 10): bind it to each
 * MaglevService as `backendSet` instead of `backends`. It touches no host; each service's
 * state carries the set's digest and count, every host builds the same Maglev tables from
 * it, and each host records the backends it applied, against which `refresh` reports drift.
 */
export class MaglevBackendSet extends SharedList<Record<string, Backend>> {
  /** The canonical backends (keyed as MaglevService keys them), computed in the program; not stored again in state. */
  public readonly backends: pulumi.Output<Record<string, Backend>>;

  constructor(name: string, args: MaglevBackendSetArgs, opts?: pulumi.CustomResourceOptions) {
    super("maglevBackendSet", "MaglevBackendSet", "backends", name, args.backends, canonicalBackendSet, opts);
    this.backends = this.canonicalItems.apply((backends) => backends ?? {});
  }
}
