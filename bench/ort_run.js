// ONNX Runtime side of the benchmark: same protocol and output line as
// qlens-bench, so bench/run.sh can compare the two side by side.
//
// Usage: node ort_run.js MODEL.onnx INPUT.npy [--threads T] [--warmup W] [--iters N]
//
// Runs the model on the CPU execution provider (intra-op threads T, inter-op 1,
// all graph optimisations), W untimed runs, then N timed runs of the whole
// session.run() call, and prints one JSON line:
//   {"median_ms":..,"min_ms":..,"peak_rss_kb":..,"out_sum":..}
// peak_rss_kb is the process's max RSS (process.resourceUsage().maxRSS, KiB),
// out_sum the sum of the first output of the last run (a sanity cross-check).
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));

// Minimal .npy reader: format 1.x/2.x/3.x, float32 little-endian, C order.
function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 10 || buf[0] !== 0x93 || buf.toString('latin1', 1, 6) !== 'NUMPY')
    throw new Error(file + ': not a .npy file');
  const major = buf[6];
  if (major < 1 || major > 3) throw new Error(file + ': unsupported .npy version ' + major);
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const off = major === 1 ? 10 : 12;
  const header = buf.toString(major === 3 ? 'utf8' : 'latin1', off, off + hlen);
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header);
  if (!descr || (descr[1] !== '<f4' && descr[1] !== 'f4'))
    throw new Error(file + ': float32 little-endian data expected, got ' +
                    (descr ? descr[1] : '?'));
  if (!/'fortran_order'\s*:\s*False/.test(header))
    throw new Error(file + ': Fortran-order arrays are not supported');
  const sm = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (!sm) throw new Error(file + ': no shape in header');
  const shape = sm[1].split(',').map(s => s.trim()).filter(s => s.length).map(Number);
  const numel = shape.reduce((a, b) => a * b, 1);
  const start = off + hlen;
  if (buf.length - start < numel * 4) throw new Error(file + ': truncated data');
  // View the file buffer in place when it is 4-byte aligned (numpy pads the
  // header so it is), else copy into a fresh ArrayBuffer.
  const at = buf.byteOffset + start;
  const data = at % 4 === 0 ? new Float32Array(buf.buffer, at, numel)
                            : new Float32Array(buf.buffer.slice(at, at + numel * 4));
  return { shape, data };
}

function usage(msg) {
  if (msg) console.error('ort_run: ' + msg);
  console.error('usage: node ort_run.js MODEL.onnx INPUT.npy [--threads T] [--warmup W] ' +
                '[--iters N]');
  process.exit(2);
}

async function main() {
  const args = process.argv.slice(2);
  const opt = { threads: 1, warmup: 3, iters: 10 };
  const pos = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i].startsWith('--')) {
      const k = args[i].slice(2);
      if (!(k in opt) || i + 1 >= args.length) usage('bad option ' + args[i]);
      opt[k] = Number(args[++i]);
      if (!Number.isInteger(opt[k])) usage('--' + k + ' needs an integer');
    } else {
      pos.push(args[i]);
    }
  }
  if (pos.length !== 2 || opt.threads < 1 || opt.warmup < 0 || opt.iters < 1) usage();
  const [model, input] = pos;
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'], intraOpNumThreads: opt.threads, interOpNumThreads: 1,
    graphOptimizationLevel: 'all', executionMode: 'sequential',
  });
  const x = readNpy(input);
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) };
  const times = [];
  let out;
  for (let i = 0; i < opt.warmup + opt.iters; i++) {
    const t0 = process.hrtime.bigint();
    out = await session.run(feeds);
    const t1 = process.hrtime.bigint();
    if (i >= opt.warmup) times.push(Number(t1 - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  const n = times.length;
  const median = n % 2 ? times[(n - 1) / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
  let sum = 0;
  for (const v of out[session.outputNames[0]].data) sum += v;
  console.log(JSON.stringify({ median_ms: +median.toFixed(3), min_ms: +times[0].toFixed(3),
                               peak_rss_kb: process.resourceUsage().maxRSS,
                               out_sum: +sum.toPrecision(6) }));
}

main().catch(e => { console.error('ort_run: ' + e.message); process.exit(1); });
