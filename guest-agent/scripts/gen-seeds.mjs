#!/usr/bin/env node
// Writes each test vector's bytes as a libFuzzer seed file: gen-seeds.mjs <vectors.json> <dir>
import fs from "node:fs";
import path from "node:path";

const [file, dir] = process.argv.slice(2);
fs.mkdirSync(dir, { recursive: true });
if (!fs.existsSync(file)) process.exit(0);
for (const v of JSON.parse(fs.readFileSync(file, "utf8")))
  if (v.hex.length <= 131072) fs.writeFileSync(path.join(dir, v.name.replace(/[^a-zA-Z0-9._-]/g, "_")), Buffer.from(v.hex, "hex"));
