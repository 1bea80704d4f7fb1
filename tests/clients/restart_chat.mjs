#!/usr/bin/env node
// The chat page survives server restarts without losing or repeating a line: headless Chromium
// (playwright-core) against a roomcast binary this script starts, stops and starts again itself.
//
// Usage: node restart_chat.mjs /path/to/roomcast DATA_DIR
//
// Picks two free loopback ports and starts the binary on them (from an empty temporary working directory,
// so no .env is read; PUBLIC_PATH is this repository's public/, DATA_DIR the one given, rate limits off).
// Opens the page in two tabs; both join `general`. Then:
//   1. the tabs chat alternately, 10 lines, each shown by both before the next is sent;
//   2. SIGTERM: the server stops; both tabs must show `reconnecting`; each tab sends 2 lines while the
//      server is down (they wait in the page's outbox); the server starts again on the same ports and
//      DATA_DIR; both tabs must show `open` again and every line, the ones sent while down included;
//   3. the tabs chat 4 more lines, the last 2 sent without waiting, and the server is killed with SIGKILL
//      right after them (they may or may not have been published: either way they must appear once);
//      then as in 2: `reconnecting`, 2 lines each while down, a new start, `open`, every line;
//   4. 4 more alternating lines.
// Finally each tab's log must show every chat line of this run exactly once, both tabs the same general
// lines in the same order, with contiguous offsets; no gap, reset or server error notice; and after each
// restart the tabs must have rejoined with `recovered: true` (the page's `* rejoined general: N missed`).
//
// A non-empty DATA_DIR is fine: its history is shown first, and this run's lines carry a run tag.
// Every wait has a deadline; the server is killed on exit and on failure; on failure both tabs' logs and the
// end of the server's output are printed. Exit 0 on success, 1 on failure, 2 on bad usage.
// CHROMIUM overrides the browser binary (default /usr/bin/chromium).

import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  chatLines,
  launchBrowser,
  logLines,
  offsetProblems,
  sendLine,
  waitForState,
  waitForTexts,
  waitUntil,
} from "./chat_page.mjs";

const START_DEADLINE_MS = 20000;
const EXIT_DEADLINE_MS = 10000;
const STEP_DEADLINE_MS = 15000;
// After a restart the page's backoff may be at up to 5 s, and the server needs its start-up time.
const RECOVER_DEADLINE_MS = 30000;
const TOTAL_DEADLINE_MS = 240000;
// The key prefixes the binary reads, dropped from the inherited environment (as tests/common does).
const CONFIG_PREFIXES = ["APP_", "SERVER_", "WEBSOCKET_", "PUBLIC_", "HISTORY_", "DATA_DIR", "PRESENCE_", "AUTH_", "RUST_LOG"];

const here = dirname(fileURLToPath(import.meta.url));
const publicDir = resolve(here, "..", "..", "public");
const [binaryArg, dataDirArg] = process.argv.slice(2);
const RUN = Math.random().toString(36).slice(2, 8);

/** A loopback port free right now (the kernel's pick, released again). */
function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

/** The roomcast process: started and stopped by this script, its output kept for a failure report. */
class Server {
  constructor(binary, env, cwd) {
    Object.assign(this, { binary, env, cwd, child: null, output: [] });
  }

  async start() {
    const child = (this.child = spawn(this.binary, [], { cwd: this.cwd, env: this.env, stdio: ["ignore", "pipe", "pipe"] }));
    const exited = new Promise((res) => {
      child.once("exit", (code, signal) => res({ code, signal }));
      child.once("error", (err) => res({ error: err.message })); // e.g. no such binary: no exit event
    });
    child.exited = exited;
    let text = "";
    const listening = new Promise((res) => {
      const onData = (chunk) => {
        text += chunk;
        this.output.push(...chunk.toString().split("\n").filter(Boolean));
        if (/websocket listening on/.test(text) && /http listening on/.test(text)) res(true);
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
    });
    const timer = new Promise((res) => setTimeout(() => res("timeout"), START_DEADLINE_MS));
    const result = await Promise.race([listening, exited.then((e) => ({ exit: e })), timer]);
    if (result === "timeout") throw new Error(`the server did not log both listening lines within ${START_DEADLINE_MS} ms`);
    if (result !== true) throw new Error(`the server exited at start: ${JSON.stringify(result.exit)}`);
    console.log(`server started (pid ${child.pid})`);
  }

  /** Sends `signal` and waits for the process to end. */
  async stop(signal) {
    const child = this.child;
    child.kill(signal);
    const timer = new Promise((res) => setTimeout(() => res("timeout"), EXIT_DEADLINE_MS));
    const result = await Promise.race([child.exited, timer]);
    if (result === "timeout") throw new Error(`the server did not exit within ${EXIT_DEADLINE_MS} ms of ${signal}`);
    console.log(`server stopped by ${signal}: ${JSON.stringify(result)}`);
    this.child = null;
  }

  /** For exit paths: no waiting, no questions. */
  kill() {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }
}

async function flow(context, server, httpUrl, tabs) {
  for (const [name] of [["tab 1"], ["tab 2"]]) {
    const page = await context.newPage();
    page.on("console", (msg) => {
      // The page asks the HTTP side for the WebSocket port on every attempt: refused while the server is down.
      if (!/ERR_CONNECTION_REFUSED/.test(msg.text())) console.log(`${name} console.${msg.type()}: ${msg.text()}`);
    });
    page.on("pageerror", (err) => console.log(`${name} page error: ${err.message}`));
    tabs.push([name, page]);
  }
  for (const [name, page] of tabs) {
    await page.goto(httpUrl + "/", { timeout: STEP_DEADLINE_MS });
    await waitForState(page, name, "open", STEP_DEADLINE_MS);
    await waitUntil(`${name}: never joined general`, STEP_DEADLINE_MS, async () =>
      (await logLines(page)).includes("* joined general"),
    );
  }

  const sent = []; // every line this run sent, in the order sent
  let n = 0;
  const say = async (tab, wait) => {
    const [name, page] = tabs[tab];
    const text = `${RUN} line ${++n} from ${name}`;
    await sendLine(page, text);
    sent.push(text);
    if (wait) for (const [other, p] of tabs) await waitForTexts(p, other, "general", [text], STEP_DEADLINE_MS);
  };
  const everyLineShown = async (what) => {
    for (const [name, page] of tabs) await waitForTexts(page, name, "general", sent, RECOVER_DEADLINE_MS);
    console.log(`${what}: both tabs show all ${sent.length} lines`);
  };

  // 1. Alternate, 10 lines.
  for (let i = 0; i < 10; i++) await say(i % 2, true);
  console.log("10 lines chatted");

  const restart = async (signal) => {
    await server.stop(signal);
    for (const [name, page] of tabs) await waitForState(page, name, "reconnecting", STEP_DEADLINE_MS);
    console.log("both tabs show reconnecting");
    // Typed while the server is down: the page keeps them until it is back.
    for (let i = 0; i < 4; i++) await say(i % 2, false);
    for (const [name, page] of tabs) {
      const pending = await page.textContent("#pending");
      if (Number(pending) < 2) throw new Error(`${name}: #pending shows ${pending} with 2 lines unsent`);
    }
    await server.start();
    for (const [name, page] of tabs) await waitForState(page, name, "open", RECOVER_DEADLINE_MS);
    console.log("both tabs show open again");
    await everyLineShown(`after ${signal}`);
    for (const [name, page] of tabs) {
      await waitUntil(`${name}: #pending never went back to 0`, STEP_DEADLINE_MS, async () => (await page.textContent("#pending")) === "0");
    }
  };

  // 2. A graceful restart.
  await restart("SIGTERM");

  // 3. Two lines shown, two in flight, and a crash.
  await say(0, true);
  await say(1, true);
  await say(0, false);
  await say(1, false);
  await restart("SIGKILL");

  // 4. Chat on.
  for (let i = 0; i < 4; i++) await say(i % 2, true);
  await everyLineShown("at the end");

  // Every line once, both tabs alike, contiguous offsets, and nothing the page had to warn about.
  const logs = [];
  for (const [name, page] of tabs) {
    const lines = (await chatLines(page)).filter((l) => l.room === "general");
    for (const text of sent) {
      const count = lines.filter((l) => l.text === text).length;
      if (count !== 1) throw new Error(`${name}: ${JSON.stringify(text)} shown ${count} times`);
    }
    const problems = offsetProblems(lines, "general");
    if (problems.length) throw new Error(`${name}: offsets not contiguous: ${problems.join("; ")}`);
    const notices = (await logLines(page)).filter((l) => l.startsWith("* "));
    const bad = notices.filter((l) => /^\* (gap|server error|.*history starts over|not sent|could not join)/.test(l));
    if (bad.length) throw new Error(`${name}: ${JSON.stringify(bad)}`);
    // One notice per drop and per return (not per attempt), and each rejoin a recovery.
    for (const [pattern, what] of [
      [/^\* connection lost, reconnecting$/, "drops"],
      [/^\* reconnected$/, "reconnections"],
      [/^\* rejoined general: \d+ missed$/, "recovered rejoins"],
    ]) {
      const count = notices.filter((l) => pattern.test(l)).length;
      if (count !== 2) throw new Error(`${name}: ${count} ${what} instead of 2: ${JSON.stringify(notices)}`);
    }
    logs.push(lines.filter((l) => l.text.startsWith(RUN + " ")).map((l) => l.line));
  }
  if (JSON.stringify(logs[0]) !== JSON.stringify(logs[1])) throw new Error("the tabs show this run's lines differently");
  const offsets = (await chatLines(tabs[0][1])).filter((l) => l.text.startsWith(RUN + " ")).map((l) => l.offset);
  console.log(`both tabs: ${sent.length} lines, #${offsets[0]}..#${offsets.at(-1)}, each once, in one order`);
}

async function main() {
  if (!binaryArg || !dataDirArg) {
    console.error("usage: node restart_chat.mjs /path/to/roomcast DATA_DIR");
    return 2;
  }
  const [wsPort, httpPort] = [await freePort(), await freePort()];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !CONFIG_PREFIXES.some((p) => k.startsWith(p))));
  Object.assign(env, {
    WEBSOCKET_HOST: "127.0.0.1",
    WEBSOCKET_PORT: String(wsPort),
    SERVER_HOST: "127.0.0.1",
    SERVER_PORT: String(httpPort),
    PUBLIC_PATH: publicDir,
    DATA_DIR: resolve(dataDirArg),
    WEBSOCKET_RATE_LIMIT_MESSAGES: "0",
  });
  mkdirSync(env.DATA_DIR, { recursive: true });
  const cwd = mkdtempSync(join(tmpdir(), "roomcast-restart-"));
  const profile = mkdtempSync(join(tmpdir(), "roomcast-chromium-"));
  const server = new Server(resolve(binaryArg), env, cwd);
  process.on("exit", () => server.kill());
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(1));
  const overall = setTimeout(() => {
    console.error(`FAIL: still running after ${TOTAL_DEADLINE_MS} ms`);
    process.exit(1);
  }, TOTAL_DEADLINE_MS);
  const tabs = [];
  let context;
  try {
    await server.start();
    context = await launchBrowser(profile);
    await flow(context, server, `http://127.0.0.1:${httpPort}`, tabs);
  } catch (err) {
    for (const [name, page] of tabs) {
      const lines = await logLines(page).catch(() => ["(log unreadable)"]);
      console.error(`log of ${name}:\n  ${lines.join("\n  ")}`);
    }
    console.error(`server output (last 40 lines):\n  ${server.output.slice(-40).join("\n  ")}`);
    console.error(`FAIL: ${err.message}`);
    return 1;
  } finally {
    clearTimeout(overall);
    server.kill();
    if (context) await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
    rmSync(cwd, { recursive: true, force: true });
  }
  console.log("restart_chat.mjs: every line once, in one order, across a SIGTERM and a SIGKILL restart");
  return 0;
}

process.exit(await main());
