// Opens the traffic page in headless Debian Chromium (driven by playwright-core) and reports what it rendered.
//
//   node tests/node/dashboard-check.mjs --url http://127.0.0.1:P/dashboard --screenshot out.png
//        [--rows N] [--filter-name TOOL] [--token T [--prompt-screenshot PATH]] [--chromium PATH] [--timeout MS]
//
// Waits until the requests table shows at least N rows (default 1), optionally types a bearer token
// into the page's token form first (after a screenshot of the form when asked), optionally applies the Name filter and counts the rows left,
// saves a full-page screenshot, and prints one JSON object on stdout: rows, the tool names shown,
// the counters, the status split, the top tools, console errors and every URL the page requested
// (anything not on loopback is blocked and listed). Exits 1 with {"error": ...} on failure.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    screenshot: { type: "string" },
    rows: { type: "string", default: "1" },
    "filter-name": { type: "string" },
    token: { type: "string" },
    "prompt-screenshot": { type: "string" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
    timeout: { type: "string", default: "30000" },
  },
});
if (!opts.url || !opts.screenshot) {
  console.error("usage: dashboard-check.mjs --url URL --screenshot PATH [--rows N] [--filter-name NAME] [--token T]");
  process.exit(2);
}

const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);
const timeout = Number(opts.timeout);
const wantRows = Number(opts.rows);
const started = Date.now();
const timings = {};
const consoleErrors = [];
const pageErrors = [];
const requested = [];
const blocked = [];
const userDataDir = mkdtempSync(join(tmpdir(), "dashboard-chromium-"));
let context;

function isLoopback(url) {
  if (url.startsWith("data:") || url.startsWith("about:")) return true;
  try { return LOOPBACK.has(new URL(url).hostname); } catch { return false; }
}

try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium, headless: true, args: FLAGS, timeout,
    viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1, colorScheme: "light",
  });
  timings.launch_ms = Date.now() - started;
  // Loopback only: anything else the page asks for is refused and reported.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (isLoopback(url)) return route.continue();
    blocked.push(url);
    return route.abort("blockedbyclient");
  });
  const page = context.pages()[0] || await context.newPage();
  page.on("console", (msg) => { if (msg.type() === "error") consoleErrors.push(msg.text()); });
  page.on("pageerror", (err) => pageErrors.push(String(err)));
  page.on("request", (req) => requested.push(req.url()));

  const response = await page.goto(opts.url, { waitUntil: "load", timeout });
  timings.load_ms = Date.now() - started;
  let authShown = false;
  if (opts.token !== undefined) {
    await page.waitForSelector("[data-testid=auth]:not([hidden])", { timeout });
    authShown = true;
    if (opts["prompt-screenshot"]) await page.screenshot({ path: opts["prompt-screenshot"] });
    await page.fill("[data-testid=token-input]", opts.token);
    await page.click("[data-testid=token-submit]");
  }
  await page.waitForFunction(
    (n) => document.querySelectorAll("[data-testid=request-row]").length >= n, wantRows, { timeout, polling: 100 });
  timings.rows_ms = Date.now() - started;

  const summary = await page.evaluate(() => {
    const text = (sel) => document.querySelector(sel)?.textContent.trim() ?? null;
    const rows = [...document.querySelectorAll("[data-testid=request-row]")].map((tr) => ({
      method: tr.dataset.method, name: tr.dataset.name, outcome: tr.dataset.outcome,
      cells: [...tr.cells].map((td) => td.textContent.trim()),
    }));
    const status = Object.fromEntries([...document.querySelectorAll("#status-split li")]
      .map((li) => [li.dataset.outcome, Number(li.dataset.count)]));
    const top = (id) => [...document.querySelectorAll(`#${id} li[data-name]`)]
      .map((li) => ({ name: li.dataset.name, count: Number(li.dataset.count) }));
    return {
      title: document.title,
      live: { state: document.getElementById("live").dataset.state, text: text("#live-text") },
      auth_visible: !document.getElementById("auth").hidden,
      rows: rows.length,
      table: rows,
      tools_shown: [...new Set(rows.filter((r) => r.method === "tools/call").map((r) => r.name))].sort(),
      methods_shown: [...new Set(rows.map((r) => r.method))].sort(),
      counters: {
        requests: text("#requests-value"), rate: text("#rate-value"), p50: text("#p50-value"),
        p90: text("#p90-value"), p99: text("#p99-value"), not_ok: text("#errors-value"),
      },
      status,
      top_tools: top("top-tools"),
      latency: Object.fromEntries([...document.querySelectorAll("#latency tbody tr")]
        .map((tr) => [tr.dataset.testid, [...tr.cells].slice(1).map((td) => td.textContent.trim())])),
      methods_legend: [...document.querySelectorAll("#methods-legend [data-method]")].map((s) => s.dataset.method),
      charts: {
        rate_bars: document.querySelectorAll("#rate-chart rect").length,
        methods_bars: document.querySelectorAll("#methods-chart rect").length,
      },
      filter_options: {
        method: [...document.querySelectorAll("#filter-method option")].map((o) => o.value).filter(Boolean),
        name: [...document.querySelectorAll("#filter-name option")].map((o) => o.value).filter(Boolean),
        status: [...document.querySelectorAll("#filter-status option")].map((o) => o.value).filter(Boolean),
      },
      storage: { local: localStorage.length, session: sessionStorage.length, cookies: document.cookie },
      location: location.href,
    };
  });

  if (opts["filter-name"] !== undefined) {
    await page.selectOption("[data-testid=filter-name]", opts["filter-name"]);
    const filtered = await page.evaluate(() => ({
      rows: document.querySelectorAll("[data-testid=request-row]").length,
      names: [...new Set([...document.querySelectorAll("[data-testid=request-row]")].map((tr) => tr.dataset.name))],
      count_text: document.getElementById("row-count").textContent.trim(),
    }));
    summary.filtered = { name: opts["filter-name"], ...filtered };
    await page.selectOption("[data-testid=filter-name]", "");
  }

  await page.screenshot({ path: opts.screenshot, fullPage: true });
  timings.total_ms = Date.now() - started;
  console.log(JSON.stringify({
    ...summary, http_status: response?.status() ?? null, csp: (await response?.allHeaders())?.["content-security-policy"] ?? null,
    auth_shown: authShown, console_errors: consoleErrors, page_errors: pageErrors,
    requested: [...new Set(requested)], blocked, screenshot: opts.screenshot,
    browser_version: context.browser()?.version() ?? null, timings,
  }));
  await context.close();
  context = undefined;
} catch (err) {
  console.log(JSON.stringify({ error: String(err?.stack || err), console_errors: consoleErrors, page_errors: pageErrors, blocked, timings }));
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
