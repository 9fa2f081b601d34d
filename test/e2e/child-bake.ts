// Test child: build an image, printing every progress phase as a JSON line (the parent signals it
// mid-bake). argv: ref snapshotsDir
import { Image } from "@supermachine/core";

const [ref, snapshotsDir] = process.argv.slice(2);
await Image.build({
  ref: ref!,
  snapshotsDir: snapshotsDir!,
  onProgress: (e) => process.stdout.write(`${JSON.stringify({ phase: e.phase })}\n`),
});
process.stdout.write(`${JSON.stringify({ phase: "built" })}\n`);
process.exit(0);
