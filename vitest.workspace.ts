import { defineWorkspace } from "vitest/config";
import { sourceAlias } from "./vitest.shared";

const packages = [
  "base",
  "agent-protocol",
  "pool",
  "oci",
  "rootfs",
  "hypervisor",
  "hypervisor-kvm",
  "hypervisor-hvf",
  "core",
];

export default defineWorkspace([
  // Unit tests: next to the code, no VM, no network beyond 127.0.0.1, no root needed.
  ...packages.map((name) => ({
    resolve: { alias: sourceAlias },
    test: {
      name: `unit-${name}`,
      root: `./packages/${name}`,
      include: ["src/**/*.test.ts"],
      testTimeout: 30_000,
    },
  })),
  // Integration tests: real registry, real QEMU, real kernel, real agent. Run serially-ish: 2 cores.
  {
    resolve: { alias: sourceAlias },
    test: {
      name: "integration",
      root: ".",
      include: [
        "packages/*/test/integration/**/*.test.ts",
        "guest-agent/test/integration/**/*.test.ts",
        "test/e2e/**/*.test.ts",
      ],
      testTimeout: 180_000,
      hookTimeout: 300_000,
      pool: "forks",
      poolOptions: { forks: { maxForks: 2, minForks: 1 } },
      fileParallelism: true,
    },
  },
]);
