#!/usr/bin/env node
// The dashboard page (public/dashboard.html) in headless Chromium while a load runs.
//
// Usage: node dashboard.mjs http://HOST:PORT SCREENSHOT.png
//
// Starts CLIENTS Node `ws` clients that join one room and each send a chat message every SEND_EVERY_MS,
// then opens /dashboard.html. The page must show every client connected, a message rate above zero in and
// out, one table row per shard, and its charts must grow by at least MIN_UPDATES points (one a second,
// from /api/stats) while the load runs. Saves a screenshot, stops the clients, exits 0; any wait past its
// deadline exits 1 with what the page showed.
//
// CHROMIUM overrides the browser binary (default /usr/bin/chromium).

import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import WebSocket from "ws";
import { launchBrowser } from "./chat_page.mjs";

const CLIENTS = 40;
const SEND_EVERY_MS = 100;
const MIN_UPDATES = 3;
const DEADLINE_MS = 20000;

const [httpUrl, screenshotArg] = process.argv.slice(2);
if (!httpUrl || !screenshotArg) {
  console.error("usage: node dashboard.mjs http://HOST:PORT SCREENSHOT.png");
  process.exit(2);
}
const screenshot = resolve(screenshotArg);

/** Polls `check` (an async function returning a value or null) until it returns a value, or fails. */
async function waitFor(what, check) {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    const value = await check();
    if (value !== null && value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The load: CLIENTS members of one room, each sending a message every SEND_EVERY_MS. */
async function startLoad() {
  const { port } = await (await fetch(`${httpUrl}/api/websocket`)).json();
  const wsUrl = `ws://${new URL(httpUrl).hostname}:${port}/`;
  const clients = [];
  const timers = [];
  for (let i = 0; i < CLIENTS; i++) {
    const ws = new WebSocket(wsUrl);
    await new Promise((ok, fail) => {
      ws.once("open", ok);
      ws.once("error", fail);
    });
    ws.send(JSON.stringify({ type: "room.join", payload: { room: "dashboard-load" } }));
    clients.push(ws);
    let n = 0;
    timers.push(
      setInterval(() => {
        n += 1;
        ws.send(JSON.stringify({ type: "chat.message", payload: { room: "dashboard-load", text: `client ${i} line ${n}` } }));
      }, SEND_EVERY_MS),
    );
  }
  return () => {
    timers.forEach(clearInterval);
    clients.forEach((ws) => ws.close(1000));
  };
}

const text = (page, id) => page.$eval(`#${id}`, (el) => el.textContent);
const points = (page, chart) => page.$eval(`#chart-${chart}`, (el) => Number(el.dataset.points));

const profile = mkdtempSync(join(tmpdir(), "roomcast-dashboard-"));
let browser;
let stopLoad = () => {};
let page;
try {
  stopLoad = await startLoad();
  browser = await launchBrowser(profile);
  page = browser.pages()[0] ?? (await browser.newPage());
  await page.goto(`${httpUrl}/dashboard.html`);
  await waitFor("the page to go live", async () => (await page.$eval("#status", (el) => el.dataset.state)) === "live");
  await waitFor(`${CLIENTS} connections shown`, async () => Number(await text(page, "connections")) >= CLIENTS);
  const before = await points(page, "messages");
  await waitFor(`${MIN_UPDATES} more points on the charts`, async () => (await points(page, "messages")) >= before + MIN_UPDATES);
  await waitFor("a message rate in and out", async () => Number(await text(page, "in-rate")) > 0 && Number(await text(page, "out-rate")) > 0);
  for (const chart of ["connections", "shards", "queued"]) {
    const shown = await points(page, chart);
    if (shown < before + MIN_UPDATES) throw new Error(`chart ${chart} has ${shown} points, fewer than the messages chart`);
  }
  const [rows, shards] = await Promise.all([
    page.$$eval("#shard-rows tr", (trs) => trs.length),
    text(page, "shards"),
  ]);
  const [answering, total] = shards.split("/").map(Number);
  if (rows !== total || answering !== total) throw new Error(`${rows} shard rows for shards ${shards}`);
  console.log(
    `dashboard: ${await text(page, "connections")} connections, ${await text(page, "in-rate")} in/s, ` +
      `${await text(page, "out-rate")} out/s, ${rows} shards, ${await points(page, "messages")} points`,
  );
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${screenshot}`);
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  if (page) console.error(await page.$eval("body", (el) => el.innerText).catch(() => "(no page)"));
  process.exitCode = 1;
} finally {
  stopLoad();
  await browser?.close();
  rmSync(profile, { recursive: true, force: true });
}
