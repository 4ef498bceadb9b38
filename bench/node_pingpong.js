'use strict';
// The Node.js peer of bench/run.py: worker_threads and postMessage, timed inside Node.
//
//   node node_pingpong.js serve      one JSON request per stdin line, one JSON reply per stdout line:
//                                    {"op":"rt","n":N,"warm":W}      sequential round trips, ns each
//                                    {"op":"stream","n":N,"warm":W}  N one-way messages, one reply
//                                    {"op":"startup","k":K}          new Worker -> first reply -> terminate
//                                    {"op":"quit"}
//   node --expose-gc node_pingpong.js mem N [SETTLE_S]   RSS increase per live idle worker, as JSON
//
// The worker echoes numbers; between 'stream' and 'end' it counts them instead and answers the count.
// Each rt / stream block uses a fresh worker, started and terminated outside the timed part.

const { Worker, isMainThread, parentPort } = require('node:worker_threads');

if (!isMainThread) {
  let counting = false;
  let count = 0;
  parentPort.on('message', (x) => {
    if (counting) {
      if (x === 'end') {
        counting = false;
        parentPort.postMessage(count);
      } else {
        count += 1;
      }
    } else if (x === 'stream') {
      counting = true;
      count = 0;
    } else {
      parentPort.postMessage(x);
    }
  });
  return;
}

const now = () => process.hrtime.bigint();
const cpuNs = () => {
  const u = process.cpuUsage(); // microseconds, whole process
  return (u.user + u.system) * 1000;
};

class Echo {
  constructor() {
    this.worker = new Worker(__filename);
    this.resolve = null;
    this.worker.on('message', (x) => this.resolve(x));
    this.worker.on('error', (e) => {
      console.error(e);
      process.exit(1);
    });
  }

  roundtrip(x) {
    return new Promise((resolve) => {
      this.resolve = resolve;
      this.worker.postMessage(x);
    });
  }

  stream(n) {
    return new Promise((resolve) => {
      this.resolve = resolve;
      this.worker.postMessage('stream');
      for (let i = 0; i < n; i += 1) this.worker.postMessage(i);
      this.worker.postMessage('end');
    });
  }

  terminate() {
    return this.worker.terminate();
  }
}

async function roundtrips({ n, warm }) {
  const w = new Echo();
  for (let i = 0; i < warm; i += 1) await w.roundtrip(1);
  const samples = new Array(n);
  const cpu0 = cpuNs();
  let prev = now();
  for (let i = 0; i < n; i += 1) {
    await w.roundtrip(1);
    const t = now();
    samples[i] = Number(t - prev);
    prev = t;
  }
  const cpu = cpuNs() - cpu0;
  await w.terminate();
  return { samples_ns: samples, cpu_ns: cpu };
}

async function stream({ n, warm }) {
  const w = new Echo();
  if (warm) await w.stream(warm);
  const cpu0 = cpuNs();
  const t0 = now();
  const count = await w.stream(n);
  const ns = Number(now() - t0);
  const cpu = cpuNs() - cpu0;
  await w.terminate();
  return { count, ns, cpu_ns: cpu };
}

async function startup({ k }) {
  const phases = { start: [], first_rt: [], stop: [], total: [] };
  for (let i = 0; i <= k; i += 1) {
    const t0 = now();
    const w = new Echo();
    const t1 = now();
    if ((await w.roundtrip(1)) !== 1) throw new Error('bad echo');
    const t2 = now();
    await w.terminate();
    const t3 = now();
    if (i > 0) {
      phases.start.push(Number(t1 - t0));
      phases.first_rt.push(Number(t2 - t1));
      phases.stop.push(Number(t3 - t2));
      phases.total.push(Number(t3 - t0));
    }
  }
  return phases;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function memory(n, settleMs) {
  const first = new Echo(); // one whole lifecycle first, as on the Python side
  await first.roundtrip(0);
  await first.terminate();
  if (global.gc) global.gc();
  await sleep(settleMs / 3);
  const rss0 = process.memoryUsage().rss;
  const live = [];
  for (let i = 0; i < n; i += 1) live.push(new Echo());
  for (const w of live) await w.roundtrip(1);
  if (global.gc) global.gc();
  await sleep(settleMs);
  const rss1 = process.memoryUsage().rss;
  return { workers: n, rss0, rss1, per_worker: (rss1 - rss0) / n };
}

async function serve() {
  const ops = { rt: roundtrips, stream, startup, version: async () => ({ version: process.version }) };
  const lines = require('node:readline').createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const request = JSON.parse(line);
    if (request.op === 'quit') break;
    const op = ops[request.op];
    const reply = op ? await op(request) : { error: `unknown op ${request.op}` };
    process.stdout.write(`${JSON.stringify(reply)}\n`);
  }
}

async function main() {
  const [mode, arg] = process.argv.slice(2);
  if (mode === 'serve') {
    await serve();
  } else if (mode === 'mem') {
    const settleS = parseFloat(process.argv[4] || '0.3');
    console.log(JSON.stringify(await memory(parseInt(arg || '20', 10), settleS * 1000)));
  } else {
    console.error('usage: node node_pingpong.js serve | mem N');
    process.exitCode = 2;
  }
  process.exit();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
