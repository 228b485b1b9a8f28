import type * as pulumi from "@pulumi/pulumi";

/**
 * The provider object Pulumi serializes into the state of every resource of a
 * bpfleet kind. It stays a few lines that load the implementation from the
 * installed package by name (DESIGN.md, "The provider object is serialized"):
 * capturing ssh2 or the kind's modules here would serialize them too, and a
 * `delete` runs whatever code the state holds.
 */
export function kindProvider(kind: string): pulumi.dynamic.ResourceProvider {
  const implementation = `bpfleet/provider/${kind}/dynamic`;
  return {
    check: (olds, news) => require(implementation).provider.check(olds, news),
    diff: (id, olds, news) => require(implementation).provider.diff(id, olds, news),
    create: (inputs) => require(implementation).provider.create(inputs),
    read: (id, props) => require(implementation).provider.read(id, props),
    update: (id, olds, news) => require(implementation).provider.update(id, olds, news),
    delete: (id, props) => require(implementation).provider.delete(id, props),
  };
}
