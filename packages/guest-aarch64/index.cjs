// Paths of the aarch64 guest bundle (built at pack time by scripts/guest-bundle.mjs). CommonJS entry; index.js
// is the same for import.
const { existsSync, readFileSync } = require("node:fs");
const { join } = require("node:path");

const arch = "aarch64";
const bundleDir = join(__dirname, "bundle");
const kernelDir = join(bundleDir, "kernel");
const kernelImage = join(kernelDir, "vmlinuz");
const agentPath = join(bundleDir, "sm-agent");
const manifestPath = join(bundleDir, "manifest.json");

function isBuilt() {
  return existsSync(manifestPath) && existsSync(agentPath) && existsSync(kernelImage);
}

function readManifest() {
  return JSON.parse(readFileSync(manifestPath, "utf8"));
}

module.exports = { arch, bundleDir, kernelDir, kernelImage, agentPath, manifestPath, isBuilt, readManifest };
