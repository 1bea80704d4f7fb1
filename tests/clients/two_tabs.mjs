#!/usr/bin/env node
// The seed's "Complete test flow" in a real browser: headless Debian Chromium, driven by playwright-core.
//
// Usage: node two_tabs.mjs http://HOST:PORT [screenshot.png]
//
// Opens the served page in two tabs of one fresh profile; both must log `connected` and the welcome. In both
// tabs: room = general, click "Join room". In the first tab send "Hello from Vix"; both tabs' logs must show
// `server: room general: Hello from Vix`. Saves a screenshot of each tab (default target/two_tabs.png and
// target/two_tabs_second.png). Every wait has a deadline; a mismatch exits 1 and prints both tabs' logs.
//
// CHROMIUM overrides the browser binary (default /usr/bin/chromium).

import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const STEP_DEADLINE_MS = 10000;
const WELCOME = "server: welcome to Vix WebSocket chat";
const MESSAGE = "Hello from Vix";

const here = dirname(fileURLToPath(import.meta.url));
const httpUrl = process.argv[2];
const screenshot = resolve(process.argv[3] ?? join(here, "..", "..", "target", "two_tabs.png"));

/** The page's log, one entry per line. */
const logLines = (page) => page.$eval("#log", (el) => el.textContent.split("\n").filter((l) => l !== ""));

/** Waits until the tab's log holds `count` lines equal to `line`. */
async function waitForLog(page, name, line, count = 1) {
  try {
    await page.waitForFunction(
      ([line, count]) =>
        document.querySelector("#log").textContent.split("\n").filter((l) => l === line).length >= count,
      [line, count],
      { timeout: STEP_DEADLINE_MS },
    );
  } catch {
    throw new Error(`${name}: log never showed ${JSON.stringify(line)} x${count} within ${STEP_DEADLINE_MS} ms`);
  }
  console.log(`${name}: ${line}`);
}

async function flow(context) {
  const tabs = [
    ["tab 1", await context.newPage()],
    ["tab 2", await context.newPage()],
  ];
  for (const [name, page] of tabs) {
    page.on("console", (msg) => console.log(`${name} console.${msg.type()}: ${msg.text()}`));
    page.on("pageerror", (err) => console.log(`${name} page error: ${err.message}`));
    await page.goto(httpUrl + "/", { timeout: STEP_DEADLINE_MS });
  }
  for (const [name, page] of tabs) {
    await waitForLog(page, name, "connected");
    await waitForLog(page, name, WELCOME);
    // The page joins its current room as soon as it connects.
    await waitForLog(page, name, "server: joined room: general");
  }

  // The seed's steps: in both tabs, room = general, click Join room.
  for (const [name, page] of tabs) {
    await page.fill("#room", "general");
    await page.click("#join");
    await waitForLog(page, name, "joined room: general");
    await waitForLog(page, name, "server: joined room: general", 2);
  }

  const [, sender] = tabs[0];
  await sender.fill("#message", MESSAGE);
  await sender.click("#send");
  for (const [name, page] of tabs) {
    await waitForLog(page, name, `server: room general: ${MESSAGE}`);
  }

  for (const [name, page] of tabs) {
    const lines = await logLines(page);
    const bad = lines.filter((l) => l === "error" || l === "closed");
    if (bad.length > 0) throw new Error(`${name}: log shows ${JSON.stringify(bad)}`);
    if (lines.filter((l) => l === `server: room general: ${MESSAGE}`).length !== 1) {
      throw new Error(`${name}: the broadcast arrived more than once`);
    }
  }

  mkdirSync(dirname(screenshot), { recursive: true });
  await tabs[0][1].screenshot({ path: screenshot, fullPage: true });
  await tabs[1][1].screenshot({ path: screenshot.replace(/\.png$/, "_second.png"), fullPage: true });
  console.log(`screenshots: ${screenshot}`);
}

async function main() {
  if (!httpUrl) {
    console.error("usage: node two_tabs.mjs http://HOST:PORT [screenshot.png]");
    return 2;
  }
  const profile = mkdtempSync(join(tmpdir(), "roomcast-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      headless: true,
      timeout: 30000,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    await flow(context).catch(async (err) => {
      for (const page of context.pages()) {
        const lines = await logLines(page).catch(() => ["(log unreadable)"]);
        console.error(`log of ${page.url()}:\n  ${lines.join("\n  ")}`);
      }
      throw err;
    });
  } catch (err) {
    console.error(`FAIL: ${err.message}`);
    return 1;
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
  console.log("two_tabs.mjs: both tabs received the broadcast");
  return 0;
}

process.exit(await main());
