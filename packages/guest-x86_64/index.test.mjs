// node --test: the ESM and CommonJS entries agree; a built bundle matches its manifest.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { test } from "node:test";
import * as esm from "./index.js";

const cjs = createRequire(import.meta.url)("./index.cjs");

test("import and require expose the same paths", () => {
  const pick = ({ arch, bundleDir, kernelDir, kernelImage, agentPath, manifestPath }) => ({
    arch,
    bundleDir,
    kernelDir,
    kernelImage,
    agentPath,
    manifestPath,
  });
  assert.deepEqual(Object.keys(esm).sort(), Object.keys(cjs).sort());
  assert.deepEqual(pick(esm), pick(cjs));
  assert.equal(esm.arch, "x86_64");
});

test(
  "a built bundle matches its manifest",
  { skip: !esm.isBuilt() && "bundle not built (npm run bundle)" },
  () => {
    const m = esm.readManifest();
    assert.equal(m.arch, "x86_64");
    assert.match(m.kernel.correspondingSource, /apt-get source linux=/);
    assert.ok(Object.keys(m.files).includes("sm-agent"));
    for (const [rel, sum] of Object.entries(m.files)) {
      const got = createHash("sha256")
        .update(readFileSync(join(esm.bundleDir, rel)))
        .digest("hex");
      assert.equal(got, sum, rel);
    }
  },
);
