import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Lab and end-to-end suites share the machine's namespaces and the Pulumi
    // backend; running files one at a time keeps their failures readable.
    fileParallelism: false,
    pool: "forks",
    testTimeout: 120_000,
    hookTimeout: 600_000,
  },
});
