// What two_tabs.mjs and restart_chat.mjs share: launching headless Chromium, and reading and waiting on
// the chat page (public/index.html) as a user would see it.
//
// The page's #log format (documented at the top of the page's script):
//   chat:   "ROOM #OFFSET FROM: TEXT"   one line per message of the room, each offset once, in order
//   notice: "* ..."                    connection and room events
// #state holds the connection state: connecting, open, reconnecting or closed.

import { chromium } from "playwright-core";

export const CHAT_LINE = /^(\S+) #(\d+) (\S+): (.*)$/;

/** Headless Debian Chromium in a fresh profile (CHROMIUM overrides the binary). */
export function launchBrowser(profile) {
  return chromium.launchPersistentContext(profile, {
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
      // Two tabs of one window: the one behind must keep its timers (reconnect backoff) running.
      "--disable-background-timer-throttling",
      "--disable-renderer-backgrounding",
      "--disable-backgrounding-occluded-windows",
      // A test's TLS proxy (tests/proxy.rs) has a self-signed certificate.
      ...(process.env.IGNORE_CERTIFICATE_ERRORS ? ["--ignore-certificate-errors"] : []),
    ],
  });
}

/** The page's log, one entry per line. */
export const logLines = (page) =>
  page.$eval("#log", (el) => el.textContent.split("\n").filter((l) => l !== ""));

/** The chat lines of the page's log, parsed: {line, room, offset, from, text}. */
export async function chatLines(page) {
  return (await logLines(page)).flatMap((line) => {
    const m = CHAT_LINE.exec(line);
    return m ? [{ line, room: m[1], offset: Number(m[2]), from: m[3], text: m[4] }] : [];
  });
}

/** Polls `check()` (async, truthy when done) every 50 ms until it holds or `deadlineMs` passes; the
 * error names `what`. Returns check's value. */
export async function waitUntil(what, deadlineMs, check) {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > until) throw new Error(`${what}: not within ${deadlineMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Waits until the page's connection indicator shows `state`. */
export function waitForState(page, name, state, deadlineMs) {
  return waitUntil(`${name}: #state never showed ${state}`, deadlineMs, () =>
    page.$eval("#state", (el, state) => el.dataset.state === state && el.textContent === state, state),
  );
}

/** Waits until the page's log holds at least `count` lines equal to `line`. */
export function waitForLine(page, name, line, deadlineMs, count = 1) {
  return waitUntil(`${name}: log never showed ${JSON.stringify(line)} x${count}`, deadlineMs, async () =>
    (await logLines(page)).filter((l) => l === line).length >= count,
  );
}

/** Waits until the page shows a chat line with each of `texts` in `room`; returns the page's chat lines. */
export function waitForTexts(page, name, room, texts, deadlineMs) {
  return waitUntil(
    `${name}: log never showed ${texts.length} messages (${JSON.stringify(texts.slice(0, 3))}...)`,
    deadlineMs,
    async () => {
      const lines = await chatLines(page);
      const shown = new Set(lines.filter((l) => l.room === room).map((l) => l.text));
      return texts.every((t) => shown.has(t)) && lines;
    },
  );
}

/** Types `text` into the message box and presses Enter, as a user would. */
export async function sendLine(page, text) {
  await page.fill("#message", text);
  await page.press("#message", "Enter");
}

/** Problems in a page's chat lines for `room`: an offset shown twice, out of order, or skipped. */
export function offsetProblems(lines, room) {
  const problems = [];
  const mine = lines.filter((l) => l.room === room);
  for (let i = 1; i < mine.length; i++) {
    if (mine[i].offset !== mine[i - 1].offset + 1) {
      problems.push(`#${mine[i - 1].offset} is followed by #${mine[i].offset}`);
    }
  }
  return problems;
}
