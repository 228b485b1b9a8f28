/** The compiled BPF objects that ship inside the package (bpf/obj/). */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { localObject, type LocalObject } from "./remote/objectUpload";

function packageRoot(): string {
  // Works from provider/ (tests via tsx/vitest) and from dist/provider/ (the built package).
  let dir = __dirname;
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`bpfleet: cannot find the package root above ${__dirname}`);
    dir = parent;
  }
  return dir;
}

const cache = new Map<string, LocalObject>();

/** The packaged object `bpf/obj/<name>.bpf.o`, with its sha256. */
export function packagedObject(name: string): LocalObject {
  let object = cache.get(name);
  if (!object) {
    const path = join(packageRoot(), "bpf", "obj", `${name}.bpf.o`);
    if (!existsSync(path)) throw new Error(`bpfleet: the BPF object ${path} is missing; this package was built without its BPF objects (run 'npm run build')`);
    object = localObject(path);
    cache.set(name, object);
  }
  return object;
}
