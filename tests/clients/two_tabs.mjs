#!/usr/bin/env node
// The seed's "Complete test flow" in a real browser: headless Debian Chromium, driven by playwright-core,
// on the roomcast.v1 page (public/index.html with public/roomcast.js).
//
// Usage: node two_tabs.mjs http://HOST:PORT [screenshot.png] [--expect-extensions VALUE|none]
//
// Opens the served page in two tabs of one fresh profile; both must show the connection `open`, a session
// id and `* joined general` once. In both tabs: room = general, click "Join room": the page says it is
// already there and does not join twice. The first tab sends "Hello from Vix" with Enter; both tabs must
// show it once as `general #N FROM: Hello from Vix`, with the same N and FROM. Then the second tab sends a
// message of over 64 bytes (compressed by a server that negotiated permessage-deflate) with the Send
// button, which both tabs must show once, at N+1.
//
// Then one room at a time: the second tab joins `side`, so it leaves `general` (its rooms list and heading
// show only `side`, its log loses general's lines); the first tab posts in general meanwhile, which the
// second must not show; the second tab's message in side reaches only it; back in general, the second tab
// is shown general's history, the message it missed included. Both tabs' general lines must then be equal,
// each once with contiguous offsets. Messages already in the room's history (a server run by hand) are
// tolerated: only lines that arrive after the step starts are counted.
//
// Saves a screenshot of each tab (default target/two_tabs.png and target/two_tabs_second.png). Every wait
// has a deadline; a mismatch exits 1 and prints both tabs' logs.
//
// With `--expect-extensions`, each tab's page socket must report exactly VALUE as its negotiated extensions
// (the page's client `roomcast.extensions`, which is its socket's `extensions`: the server's
// Sec-WebSocket-Extensions answer; `none`: the empty string).
//
// CHROMIUM overrides the browser binary (default /usr/bin/chromium).

import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  chatLines,
  launchBrowser,
  logLines,
  offsetProblems,
  sendLine,
  waitForLine,
  waitForState,
  waitForTexts,
} from "./chat_page.mjs";

const STEP_DEADLINE_MS = 10000;
const MESSAGE = "Hello from Vix";
// Over 64 bytes (the server's default WEBSOCKET_DEFLATE_MIN_SIZE) and repetitive, so a deflate session
// gets it compressed.
const LONG_MESSAGE = "Long enough to be compressed: " + "the quick brown fox jumps over the lazy dog; ".repeat(8).trimEnd();
// Unique per run, so a second run against the same server tells its messages from the history's.
const RUN = Math.random().toString(36).slice(2, 8);
const WHILE_AWAY = `posted in general while tab 2 is in side (${RUN})`;
const IN_SIDE = `only side sees this (${RUN})`;
const AFTER = `tab 2 is back in general (${RUN})`;

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const flag = args.indexOf("--expect-extensions");
const expectExtensions = flag >= 0 ? args.splice(flag, 2)[1] : undefined;
const [httpUrl, screenshotArg] = args;
const screenshot = resolve(screenshotArg ?? join(here, "..", "..", "target", "two_tabs.png"));

/** The chat lines of `room` that arrived after `before` (an earlier chatLines) with text `text`. */
async function newLinesWith(page, before, room, text) {
  const seen = new Set(before.map((l) => l.line));
  return (await chatLines(page)).filter((l) => l.room === room && l.text === text && !seen.has(l.line));
}

/** Waits until each tab shows exactly one new `room` line with `text`; returns those lines, tab by tab. */
async function eachShowsOnce(tabs, befores, room, text) {
  const found = [];
  for (const [i, [name, page]] of tabs.entries()) {
    await waitForTexts(page, name, room, [text], STEP_DEADLINE_MS);
    const lines = await newLinesWith(page, befores[i], room, text);
    if (lines.length !== 1) {
      throw new Error(`${name}: ${JSON.stringify(text.slice(0, 30))} shown ${lines.length} times: ${JSON.stringify(lines)}`);
    }
    console.log(`${name}: ${lines[0].line}`);
    found.push(lines[0]);
  }
  if (found.some((l) => l.line !== found[0].line)) {
    throw new Error(`the tabs disagree: ${JSON.stringify(found.map((l) => l.line))}`);
  }
  return found[0];
}

const chatOf = (tabs) => Promise.all(tabs.map(([, page]) => chatLines(page)));

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
    await waitForState(page, name, "open", STEP_DEADLINE_MS);
    await waitForLine(page, name, "* connected", STEP_DEADLINE_MS);
    // The page joins its current room as soon as it loads.
    await waitForLine(page, name, "* joined general", STEP_DEADLINE_MS);
    const session = await page.textContent("#session");
    if (!/^\d+-\d+$/.test(session)) throw new Error(`${name}: #session shows ${JSON.stringify(session)}`);
    console.log(`${name}: open, session ${session}, joined general`);
    const extensions = await page.evaluate(() => roomcast.extensions);
    const protocol = await page.evaluate(() => roomcast.protocol);
    console.log(`${name}: socket.extensions = ${JSON.stringify(extensions)}, protocol = ${JSON.stringify(protocol)}`);
    if (protocol !== "roomcast.v1") throw new Error(`${name}: the socket's protocol is ${JSON.stringify(protocol)}`);
    if (expectExtensions !== undefined) {
      const expected = expectExtensions === "none" ? "" : expectExtensions;
      if (extensions !== expected) {
        throw new Error(
          `${name}: socket.extensions is ${JSON.stringify(extensions)}, expected ${JSON.stringify(expected)}`,
        );
      }
    }
  }

  // The seed's steps: in both tabs, room = general, click Join room. The page is already there: it says so
  // and joins once (the seed's page printed every join twice).
  for (const [name, page] of tabs) {
    await page.fill("#room", "general");
    await page.click("#join");
    await waitForLine(page, name, "* already in general", STEP_DEADLINE_MS);
    const joins = (await logLines(page)).filter((l) => l === "* joined general").length;
    if (joins !== 1) throw new Error(`${name}: "* joined general" shown ${joins} times`);
  }

  // The first tab sends with Enter, the second with the Send button.
  let before = await chatOf(tabs);
  await sendLine(tabs[0][1], MESSAGE);
  const hello = await eachShowsOnce(tabs, before, "general", MESSAGE);

  before = await chatOf(tabs);
  await tabs[1][1].fill("#message", LONG_MESSAGE);
  await tabs[1][1].click("#send");
  const long = await eachShowsOnce(tabs, before, "general", LONG_MESSAGE);
  if (long.offset !== hello.offset + 1) throw new Error(`offsets: #${hello.offset} then #${long.offset}`);

  // One room at a time: tab 2 moves to side.
  const [name2, second] = tabs[1];
  await second.fill("#room", "side");
  await second.click("#join");
  await waitForLine(second, name2, "* joined side", STEP_DEADLINE_MS);
  await waitForLine(second, name2, "* left general", STEP_DEADLINE_MS);
  const rooms = await second.$$eval("#rooms li", (lis) => lis.map((li) => li.textContent));
  const heading = await second.textContent("#current-room");
  if (JSON.stringify(rooms) !== '["side"]' || heading !== "side") {
    throw new Error(`${name2}: after joining side, rooms ${JSON.stringify(rooms)}, heading ${JSON.stringify(heading)}`);
  }
  if ((await chatLines(second)).some((l) => l.room === "general")) {
    throw new Error(`${name2}: general's lines still shown in side`);
  }
  // Tab 1 posts in general, then tab 2 in side: tab 2 must show its own side message and never the
  // general one (the server forwards in order, so a wrongly delivered general message would be there by then;
  // the page drops it anyway, as it left general).
  await sendLine(tabs[0][1], WHILE_AWAY);
  await waitForTexts(tabs[0][1], "tab 1", "general", [WHILE_AWAY], STEP_DEADLINE_MS);
  await sendLine(second, IN_SIDE);
  await waitForTexts(second, name2, "side", [IN_SIDE], STEP_DEADLINE_MS);
  if ((await chatLines(second)).some((l) => l.text === WHILE_AWAY)) {
    throw new Error(`${name2}: shows a general message while in side`);
  }

  // Back to general: its history, the missed message included, then live messages.
  await second.fill("#room", "general");
  await second.click("#join");
  await waitForLine(second, name2, "* joined general", STEP_DEADLINE_MS, 2);
  await waitForTexts(second, name2, "general", [WHILE_AWAY], STEP_DEADLINE_MS);
  await sendLine(second, AFTER);
  for (const [name, page] of tabs) await waitForTexts(page, name, "general", [AFTER], STEP_DEADLINE_MS);
  if ((await chatLines(tabs[0][1])).some((l) => l.text === IN_SIDE)) {
    throw new Error(`tab 1: shows a side message while in general`);
  }

  // Both tabs: the same general lines, each offset once and contiguous. Tab 2 was shown the room's newest
  // history on rejoining, so compare from the first offset both show.
  const [one, two] = (await chatOf(tabs)).map((lines) => lines.filter((l) => l.room === "general"));
  for (const [name, lines] of [["tab 1", one], ["tab 2", two]]) {
    const problems = offsetProblems(lines, "general");
    if (problems.length) throw new Error(`${name}: offsets: ${problems.join("; ")}`);
    for (const text of [MESSAGE, LONG_MESSAGE, WHILE_AWAY, AFTER]) {
      const n = lines.filter((l) => l.offset >= hello.offset && l.text === text).length;
      if (n !== 1) throw new Error(`${name}: ${JSON.stringify(text.slice(0, 30))} shown ${n} times`);
    }
  }
  const from = Math.max(one[0].offset, two[0].offset);
  const a = one.filter((l) => l.offset >= from).map((l) => l.line);
  const b = two.filter((l) => l.offset >= from).map((l) => l.line);
  if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`the tabs' general lines differ`);
  console.log(`both tabs: general #${from}..#${one.at(-1).offset}, the same lines, each once`);

  for (const [name, page] of tabs) {
    const bad = (await logLines(page)).filter((l) => /^\* (server error|gap|connection lost)/.test(l));
    if (bad.length > 0) throw new Error(`${name}: log shows ${JSON.stringify(bad)}`);
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
    context = await launchBrowser(profile);
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
  console.log("two_tabs.mjs: both tabs received the broadcasts, once each, in one order");
  return 0;
}

process.exit(await main());
