#!/usr/bin/env node
// The seed's "Complete test flow" in a real browser: headless Debian Chromium, driven by playwright-core.
//
// Usage: node two_tabs.mjs http://HOST:PORT [screenshot.png] [--expect-extensions VALUE|none]
//
// Opens the served page in two tabs of one fresh profile; both must log `connected` and the welcome. In both
// tabs: room = general, click "Join room". In the first tab send "Hello from Vix"; both tabs' logs must show
// `server: room general: Hello from Vix`. Then the second tab sends a message of over 64 bytes (compressed
// by a server that negotiated permessage-deflate), which both tabs must show once. Saves a screenshot of
// each tab (default target/two_tabs.png and target/two_tabs_second.png). Every wait has a deadline; a
// mismatch exits 1 and prints both tabs' logs.
//
// With `--expect-extensions`, each tab's page socket must report exactly VALUE as its negotiated extensions
// (`socket.extensions`, the server's Sec-WebSocket-Extensions answer; `none`: the empty string).
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
// Over 64 bytes (the server's default WEBSOCKET_DEFLATE_MIN_SIZE) and repetitive, so a deflate session
// gets it compressed.
const LONG_MESSAGE = "Long enough to be compressed: " + "the quick brown fox jumps over the lazy dog; ".repeat(8).trimEnd();

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const flag = args.indexOf("--expect-extensions");
const expectExtensions = flag >= 0 ? args.splice(flag, 2)[1] : undefined;
const [httpUrl, screenshotArg] = args;
const screenshot = resolve(screenshotArg ?? join(here, "..", "..", "target", "two_tabs.png"));

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
    // The page's own socket (a global `let` of its script) says what was negotiated.
    const extensions = await page.evaluate(() => socket.extensions);
    console.log(`${name}: socket.extensions = ${JSON.stringify(extensions)}`);
    if (expectExtensions !== undefined) {
      const expected = expectExtensions === "none" ? "" : expectExtensions;
      if (extensions !== expected) {
        throw new Error(
          `${name}: socket.extensions is ${JSON.stringify(extensions)}, expected ${JSON.stringify(expected)}`,
        );
      }
    }
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


  // A long message from the second tab, which both must show.
  const [, second] = tabs[1];
  await second.fill("#message", LONG_MESSAGE);
  await second.click("#send");
  for (const [name, page] of tabs) {
    await waitForLog(page, name, `server: room general: ${LONG_MESSAGE}`);
  }

  for (const [name, page] of tabs) {
    const lines = await logLines(page);
    const bad = lines.filter((l) => l === "error" || l === "closed");
    if (bad.length > 0) throw new Error(`${name}: log shows ${JSON.stringify(bad)}`);
    for (const message of [MESSAGE, LONG_MESSAGE]) {
      if (lines.filter((l) => l === `server: room general: ${message}`).length !== 1) {
        throw new Error(`${name}: the broadcast ${JSON.stringify(message.slice(0, 30))} arrived more than once`);
      }
    }
  }

  mkdirSync(dirname(screenshot), { recursive: true });
  await tabs[0][1].screenshot({ path: screenshot, fullPage: true });
  await tabs[1][1].screenshot({ path: screenshot.replace(/\.png$/, "_second.png"), fullPage: true });
  console.log(`screenshots: ${screenshot}`);
}

async function main() {
  if (!httpUrl) {
    console.error("usage: node two_tabs.mjs http://HOST:PORT [screenshot.png] [--expect-extensions VALUE|none]");
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
