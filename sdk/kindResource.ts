import * as pulumi from "@pulumi/pulumi";

/**
 * The text every resource of a bpfleet kind carries in its state as `__provider`:
 * the engine's Node.js dynamic provider evaluates it (`handler()`) for each operation
 * and calls the object it returns. It is one line that loads the kind's implementation
 * from the installed package by name (DESIGN.md, "The provider object is serialized"):
 * the state holds no code of ours beyond it, and a `delete` runs the installed release.
 */
export function providerText(kind: string): string {
  return `exports.handler = () => require(${JSON.stringify(`bpfleet/provider/${kind}/dynamic`)}).provider;\n`;
}

/**
 * The base of every bpfleet resource class: a dynamic resource (type
 * `pulumi-nodejs:dynamic/bpfleet:<Type>`, as pulumi.dynamic.Resource registers it)
 * whose provider text is written here rather than serialized from a provider object.
 * pulumi.dynamic.Resource serializes six wrapped closures, 2.2 KB that the state
 * holds twice (inputs and outputs) for every host's resource, and every resource
 * step of an `up` checkpoints the whole state: at 100 hosts that text was over
 * half of each firewall's state (issue 10). The engine does not show a change of
 * `__provider` in a diff, and does not update a resource for one: a resource
 * created by an earlier release keeps its text until its next update, and either
 * text loads the same installed implementation.
 */
export abstract class KindResource extends pulumi.CustomResource {
  constructor(kind: string, type: string, name: string, props: pulumi.Inputs, opts?: pulumi.CustomResourceOptions) {
    super(`pulumi-nodejs:dynamic/bpfleet:${type}`, name, { ...props, __provider: providerText(kind) }, opts);
  }
}
