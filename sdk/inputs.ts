import type * as pulumi from "@pulumi/pulumi";

/**
 * How the SDK's `Args` types are made from the provider's zod schemas, so that an
 * input's type and its doc comment are written once, in the kind's schema.ts,
 * and the SDK only adds what Pulumi needs: any value, array element or object
 * field may be an Output or a Promise. Only types cross from provider/ to sdk/
 * (`import type` is erased), so the provider object Pulumi serializes into the
 * state stays the one line of kindResource.ts (providerText).
 *
 * The mapped types below are homomorphic (`[K in keyof T]`), which is what
 * keeps each property's doc comment and optionality on hover; renaming a key
 * (`as`) would drop its doc, so the few properties the SDK names differently
 * (`pinName`, `host` with its credentials) are declared in sdk/ itself.
 */

type Primitive = string | number | boolean | bigint | symbol | null | undefined;

/** T with every value, element and field also accepted as a pulumi.Input. */
export type DeepInput<T> = [T] extends [Primitive]
  ? T
  : T extends readonly (infer E)[]
    ? pulumi.Input<DeepInput<E>>[]
    : T extends object
      ? { [K in keyof T]: pulumi.Input<DeepInput<Exclude<T[K], undefined>>> }
      : T;

/**
 * A schema's input type `T` (z.input<typeof schema>) as SDK args: each property
 * of T, typed as in `Over` where the schema accepts more than users should write
 * (e.g. the keyed form the provider keeps in state beside the list users give),
 * and wrapped in pulumi.Input all the way down.
 */
export type SdkInputs<T, Over = {}> = {
  [K in keyof T]: pulumi.Input<DeepInput<Exclude<K extends keyof Over ? Over[K] : T[K], undefined>>>;
};

/** T with the types of Over's properties, keeping T's keys, optionality and doc comments. */
export type Override<T, Over> = { [K in keyof T]: K extends keyof Over ? Over[K] : T[K] };
