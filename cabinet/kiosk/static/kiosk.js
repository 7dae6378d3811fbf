// The kiosk page: shows the screen the controller publishes (server-sent events from
// `events`), in the language the customer picks. Every visible word comes from the catalogs
// in i18n/ (elements name their key in data-i18n); this file holds no text of its own.
"use strict";

const LANGS = ["en", "ja", "zh"];
const LOCALES = { en: "en-GB", ja: "ja-JP", zh: "zh-CN" };
const root = document.documentElement;
const defaultLang = LANGS.includes(root.dataset.defaultLanguage) ? root.dataset.defaultLanguage : "en";
const catalogs = {};
let lang = defaultLang;
let snap = null;      // the latest state from the controller
let pin = "";
let reconnected = false;

function t(key, vars) {
  const text = (catalogs[lang] && catalogs[lang][key]) || (catalogs.en && catalogs.en[key]) || key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (vars && name in vars ? String(vars[name]) : whole));
}

function varsOf(el) {
  const vars = {};
  for (const pair of (el.dataset.i18nVars || "").split(/\s+/).filter(Boolean)) {
    const [name, field] = pair.split("=");
    vars[name] = snap ? snap[field] : "";
  }
  return vars;
}

function truthy(field) {
  const value = snap ? snap[field] : null;
  return Array.isArray(value) ? value.length > 0 : Boolean(value);
}

// Fill every translated element; called on a new screen and on a language switch.
function translate() {
  root.lang = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n, varsOf(el));
  for (const el of document.querySelectorAll("[data-i18n-field]")) {
    const value = snap ? snap[el.dataset.i18nField] : null;
    el.textContent = value ? t(el.dataset.i18nPrefix + value) : "";
  }
  for (const el of document.querySelectorAll("[data-i18n-alt]")) el.alt = t(el.dataset.i18nAlt);
  for (const el of document.querySelectorAll("[data-i18n-aria-label]")) el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  for (const el of document.querySelectorAll("[data-show-if]")) el.hidden = !truthy(el.dataset.showIf);
  for (const el of document.querySelectorAll("[data-hide-if]")) el.hidden = truthy(el.dataset.hideIf);
  for (const button of document.querySelectorAll("button[data-lang]")) {
    const other = button.dataset.lang;
    button.textContent = catalogs[other] ? catalogs[other]["language.self"] : other;
    button.setAttribute("aria-pressed", String(other === lang));
  }
  if (snap && snap.screen === "receipt") fillReceipt();
  if (snap && snap.screen === "second_factor") showPin();
}

function money(minor, currency, exponent) {
  const format = new Intl.NumberFormat(LOCALES[lang], {
    style: "currency", currency, minimumFractionDigits: exponent, maximumFractionDigits: exponent,
  });
  return format.format(minor / 10 ** exponent);
}

function cell(tag, text, cls) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (cls) el.className = cls;
  return el;
}

function fillReceipt() {
  const body = document.getElementById("receipt-lines");
  body.replaceChildren();
  for (const line of snap.lines) {
    const row = document.createElement("tr");
    row.append(cell("td", line.name), cell("td", String(line.qty), "num"),
      cell("td", money(line.unit_price, snap.currency, snap.exponent), "num"),
      cell("td", money(line.amount, snap.currency, snap.exponent), "num"));
    body.append(row);
  }
  document.getElementById("receipt-total").textContent = money(snap.total, snap.currency, snap.exponent);
}

function showPin() {
  const total = snap.digits;
  const dots = document.getElementById("pin-dots");
  dots.replaceChildren();
  for (let i = 0; i < total; i++) {
    const dot = cell("span", "", "dot");
    dot.classList.toggle("full", i < pin.length);
    dots.append(dot);
  }
  dots.setAttribute("aria-label", t("pin.entered", { n: pin.length, total }));
  document.querySelector("[data-pin=submit]").disabled = pin.length !== total;
}

function pinKey(key) {
  if (!snap || snap.screen !== "second_factor") return;
  document.getElementById("pin-status").textContent = "";
  if (/^[0-9]$/.test(key) && pin.length < snap.digits) pin += key;
  else if (key === "delete") pin = pin.slice(0, -1);
  else if (key === "clear") pin = "";
  else if (key === "submit" && pin.length === snap.digits) { sendPin(); return; }
  showPin();
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
  });
  if (response.status !== 202) throw new Error(String(response.status));
}

async function sendPin() {
  const typed = pin;
  pin = "";
  showPin();
  const status = document.getElementById("pin-status");
  try {
    await post("pin", { pin: typed });
    status.textContent = t("pin.sent");
  } catch (e) {
    status.textContent = t("pin.error");
  }
}

async function tap(button) {
  button.disabled = true;
  try {
    await post(button.dataset.action.replace("_", "-"));
  } catch (e) {
    // the controller decides what happens next; a refused tap leaves the screen as it is
  } finally {
    button.disabled = false;
  }
}

function render(next) {
  // after a reconnect the controller may have restarted, its sequence numbers with it
  const newScreen = !snap || reconnected || next.seq !== snap.seq;
  reconnected = false;
  const previous = snap;
  snap = next;
  if (newScreen) {
    if (next.screen === "welcome" && previous && previous.screen !== "welcome") lang = defaultLang;
    pin = "";
    document.getElementById("pin-status").textContent = "";
    for (const section of document.querySelectorAll("section[data-screen]")) {
      section.hidden = section.dataset.screen !== next.screen;
    }
    if (next.screen === "qr") document.getElementById("qr").src = "qr.svg?v=" + next.seq;
    translate();
  }
  const preview = document.getElementById("preview");
  if (next.screen === "look_at_camera" && next.preview) {
    preview.src = "preview.jpg?n=" + next.preview;
    preview.hidden = false;
  } else if (newScreen) {
    preview.hidden = true;
    preview.removeAttribute("src");
  }
  if (newScreen) announce();
}

// Tell screen readers what is on show, and move focus to the new screen's heading.
function announce() {
  const section = document.querySelector(`section[data-screen="${snap.screen}"]`);
  if (!section) return;
  const heading = section.querySelector("h1");
  const lead = section.querySelector(".lead:not([hidden]), .reason");
  document.getElementById("announce").textContent =
    [heading, lead].filter(Boolean).map((el) => el.textContent).join(". ");
  heading.focus();
  document.body.dataset.screen = snap.screen;
  document.body.dataset.seq = String(snap.seq);
}

function setLanguage(next) {
  if (!LANGS.includes(next)) return;
  lang = next;
  translate();
  if (snap) announce();
}

function connect() {
  const offline = document.getElementById("offline");
  const source = new EventSource("events");
  source.onopen = () => { offline.hidden = true; reconnected = true; };
  source.onerror = () => { offline.hidden = false; };
  source.onmessage = (event) => render(JSON.parse(event.data));
}

async function start() {
  const loaded = await Promise.all(LANGS.map((code) => fetch("i18n/" + code + ".json").then((r) => r.json())));
  LANGS.forEach((code, i) => { catalogs[code] = loaded[i]; });
  for (const button of document.querySelectorAll("button[data-lang]")) {
    button.addEventListener("click", () => setLanguage(button.dataset.lang));
  }
  for (const button of document.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", () => tap(button));
  }
  for (const button of document.querySelectorAll("button[data-digit]")) {
    button.addEventListener("click", () => pinKey(button.dataset.digit));
  }
  for (const button of document.querySelectorAll("button[data-pin]")) {
    button.addEventListener("click", () => pinKey(button.dataset.pin));
  }
  document.addEventListener("keydown", (event) => {
    if (!snap || snap.screen !== "second_factor" || event.target.tagName === "BUTTON" && event.key === "Enter") return;
    if (/^[0-9]$/.test(event.key)) pinKey(event.key);
    else if (event.key === "Backspace") pinKey("delete");
    else if (event.key === "Escape") pinKey("clear");
    else if (event.key === "Enter") pinKey("submit");
    else return;
    event.preventDefault();
  });
  translate();
  connect();
}

start();
