// Prints the minified and gzipped size of the SDK for browsers, without MQTT.js (an app that has it already)
// and with it (what a page loads in total).
import { gzipSync } from 'node:zlib';

import { build } from 'esbuild';

for (const [label, external] of [['@idmq/client without mqtt', ['mqtt']], ['@idmq/client with mqtt', []]]) {
  const r = await build({
    entryPoints: ['src/index.js'], bundle: true, minify: true, format: 'esm', platform: 'browser',
    external, write: false, logLevel: 'silent',
  });
  const code = r.outputFiles[0].contents;
  console.log(`${label}: ${(code.length / 1024).toFixed(1)} KiB minified, ${(gzipSync(code).length / 1024).toFixed(1)} KiB gzipped`);
}
