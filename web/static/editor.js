// The payload editor: a textarea that validates JSON as you type and says
// where the first error is. Browsers word JSON.parse errors differently and
// some give no position, so a small scanner that follows RFC 8259 (what
// JSON.parse accepts) finds the position itself.

import { bytes, count } from './util.js';

const WS = new Set([' ', '\t', '\n', '\r']);
const MAX_DEPTH = 512;

class JSONError extends Error {
  constructor(message, pos) {
    super(message);
    this.pos = pos;
  }
}

/**
 * check validates text as JSON. It returns {ok: true, value} or
 * {ok: false, message, pos, line, column} with a 0-based pos and 1-based
 * line and column.
 */
export function check(text) {
  if (text.trim() === '') return failure(text, 'The payload is empty: enter a JSON value, e.g. {"example":"data"}', 0);
  try {
    const end = scanValue(text, skip(text, 0), 0);
    const rest = skip(text, end);
    if (rest < text.length) throw new JSONError(`Unexpected ${describe(text, rest)} after the JSON value`, rest);
  } catch (err) {
    if (err instanceof JSONError) return failure(text, err.message, err.pos);
    if (!(err instanceof RangeError)) throw err;
    // Nested too deep for the scanner: let the browser decide.
  }
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    const m = /position (\d+)/.exec(err.message);
    return failure(text, err.message, m ? Number(m[1]) : text.length);
  }
}

function failure(text, message, pos) {
  const before = text.slice(0, pos);
  const line = before.split('\n').length;
  const column = pos - before.lastIndexOf('\n');
  return { ok: false, message, pos, line, column };
}

function skip(s, i) {
  while (i < s.length && WS.has(s[i])) i++;
  return i;
}

function describe(s, i) {
  if (i >= s.length) return 'end of input';
  const c = s[i];
  if (c === '\n') return 'line break';
  if (c === '\t') return 'tab';
  const cp = s.codePointAt(i);
  const u = `U+${cp.toString(16).padStart(4, '0').toUpperCase()}`;
  if (cp < 0x20) return `control character ${u}`;
  if (/\s/u.test(String.fromCodePoint(cp))) return `${u}, a space that JSON does not allow`;
  return `'${String.fromCodePoint(cp)}'`;
}

function scanValue(s, i, depth) {
  if (depth > MAX_DEPTH) throw new RangeError('too deep');
  const c = s[i];
  switch (c) {
    case '{': return scanObject(s, i, depth);
    case '[': return scanArray(s, i, depth);
    case '"': return scanString(s, i);
    case 't': return literal(s, i, 'true');
    case 'f': return literal(s, i, 'false');
    case 'n': return literal(s, i, 'null');
    default:
      if (c === '-' || (c >= '0' && c <= '9')) return scanNumber(s, i);
      if (c === "'") throw new JSONError('Strings must use double quotes (")', i);
      throw new JSONError(`Expected a value but found ${describe(s, i)}`, i);
  }
}

function literal(s, i, word) {
  for (let k = 0; k < word.length; k++) {
    if (s[i + k] !== word[k]) throw new JSONError(`Expected ${word === 'null' ? 'null' : word} but found ${describe(s, i + k)}`, i + k);
  }
  return i + word.length;
}

function digits(s, i) {
  const start = i;
  while (i < s.length && s[i] >= '0' && s[i] <= '9') i++;
  if (i === start) throw new JSONError(`Expected a digit but found ${describe(s, i)}`, i);
  return i;
}

function scanNumber(s, i) {
  if (s[i] === '-') i++;
  if (s[i] === '0') {
    i++;
    if (s[i] >= '0' && s[i] <= '9') throw new JSONError('Numbers cannot have leading zeros', i - 1);
  } else {
    i = digits(s, i);
  }
  if (s[i] === '.') i = digits(s, i + 1);
  if (s[i] === 'e' || s[i] === 'E') {
    i++;
    if (s[i] === '+' || s[i] === '-') i++;
    i = digits(s, i);
  }
  return i;
}

function scanString(s, i) {
  const start = i;
  i++;
  while (i < s.length) {
    const c = s[i];
    if (c === '"') return i + 1;
    if (c === '\\') {
      const e = s[i + 1];
      if (e === 'u') {
        if (!/^[0-9a-fA-F]{4}$/.test(s.slice(i + 2, i + 6))) throw new JSONError('Bad \\u escape: want four hex digits', i);
        i += 6;
        continue;
      }
      if (e === undefined || !'"\\/bfnrt'.includes(e)) throw new JSONError(`Bad escape \\${e ?? ''} in string`, i);
      i += 2;
      continue;
    }
    if (c < ' ') throw new JSONError(`Unescaped ${describe(s, i)} in string (use \\n, \\t or \\u00XX)`, i);
    i++;
  }
  throw new JSONError('Unterminated string', start);
}

function scanArray(s, i, depth) {
  i = skip(s, i + 1);
  if (s[i] === ']') return i + 1;
  for (;;) {
    i = skip(s, scanValue(s, i, depth + 1));
    if (s[i] === ']') return i + 1;
    if (s[i] !== ',') throw new JSONError(`Expected ',' or ']' after an array element but found ${describe(s, i)}`, i);
    const comma = i;
    i = skip(s, i + 1);
    if (s[i] === ']') throw new JSONError('Trailing comma: JSON allows no \',\' before \']\'', comma);
  }
}

function scanObject(s, i, depth) {
  i = skip(s, i + 1);
  if (s[i] === '}') return i + 1;
  for (;;) {
    if (s[i] !== '"') {
      if (s[i] === "'") throw new JSONError('Property names must use double quotes (")', i);
      throw new JSONError(`Expected a property name in double quotes but found ${describe(s, i)}`, i);
    }
    i = skip(s, scanString(s, i));
    if (s[i] !== ':') throw new JSONError(`Expected ':' after the property name but found ${describe(s, i)}`, i);
    i = skip(s, scanValue(s, skip(s, i + 1), depth + 1));
    if (s[i] === '}') return i + 1;
    if (s[i] !== ',') throw new JSONError(`Expected ',' or '}' after a property value but found ${describe(s, i)}`, i);
    const comma = i;
    i = skip(s, i + 1);
    if (s[i] === '}') throw new JSONError('Trailing comma: JSON allows no \',\' before \'}\'', comma);
  }
}

const encoder = new TextEncoder();

/**
 * storedSize returns the size in bytes (UTF-8) of what the manager stores
 * for a parsed payload, and holds to MAX_JOB_SIZE: what the original
 * system stored, JSON.stringify(JSON.parse(body)), which this browser
 * computes itself.
 */
export function storedSize(value) {
  return encoder.encode(JSON.stringify(value)).length;
}

/**
 * PayloadEditor wires the textarea, its status line and the submit button:
 * the button is disabled while the text is not valid JSON.
 */
export class PayloadEditor {
  constructor({ textarea, status, live, gotoButton, formatButton, onChange, maxSize = 0, maxSizeNote = '' }) {
    this.textarea = textarea;
    // The manager's MAX_JOB_SIZE (0: unknown), and where that figure comes from.
    this.maxSize = maxSize;
    this.maxSizeNote = maxSizeNote;
    this.status = status;
    // The status line changes with every key; the live region speaks only
    // when the text turns valid or invalid.
    this.live = live;
    this.statusText = status.querySelector('.payload-status-text');
    this.gotoButton = gotoButton;
    this.onChange = onChange;
    this.result = null;
    textarea.addEventListener('input', () => this.validate());
    gotoButton.addEventListener('click', () => this.gotoError());
    formatButton.addEventListener('click', () => this.format());
    this.validate();
  }

  get valid() {
    return this.result?.ok === true;
  }

  validate() {
    const text = this.textarea.value;
    this.result = check(text);
    const r = this.result;
    if (r.ok) {
      // The manager refuses a body over MAX_JOB_SIZE once normalised, or
      // one over twice that as sent (it stops reading there).
      const size = storedSize(r.value);
      const sent = encoder.encode(text).length;
      const tooBig = this.maxSize > 0 && size > this.maxSize;
      const tooLong = this.maxSize > 0 && !tooBig && sent > 2 * this.maxSize + 1;
      const over = tooBig || tooLong;
      const limit = `the limit of ${count(this.maxSize)} bytes${this.maxSizeNote}`;
      this.status.dataset.valid = over ? 'too-large' : 'true';
      this.statusText.textContent = tooBig
        ? `Valid JSON, but too large: ${count(size)} bytes as stored (${bytes(size)}) is over ${limit}; the API will refuse it`
        : tooLong
          ? `Valid JSON, but ${count(sent)} bytes as typed: the API reads at most twice ${limit}; remove the spaces`
          : `Valid JSON · ${bytes(size)}`;
      this.statusText.title = over ? '' : `${count(size)} bytes as the API stores it (JSON.stringify of the parsed payload); ${count(sent)} bytes as typed`;
      this.textarea.removeAttribute('aria-invalid');
      this.gotoButton.hidden = true;
    } else {
      this.status.dataset.valid = 'false';
      this.statusText.title = '';
      this.statusText.textContent = `Line ${r.line}, column ${r.column}: ${r.message}`;
      this.textarea.setAttribute('aria-invalid', 'true');
      this.gotoButton.hidden = text.trim() === '';
    }
    const state = this.status.dataset.valid;
    if (this.live && this.wasState !== state && this.wasState !== undefined) {
      this.live.textContent = state === 'true' ? 'The payload is valid JSON.'
        : state === 'too-large' ? `The payload is too large: ${this.statusText.textContent}`
          : `The payload is not valid JSON: ${this.statusText.textContent}`;
    }
    this.wasState = state;
    this.onChange?.(r.ok);
  }

  gotoError() {
    if (!this.result || this.result.ok) return;
    this.textarea.focus();
    const p = this.result.pos;
    this.textarea.setSelectionRange(p, Math.min(p + 1, this.textarea.value.length));
  }

  format() {
    if (!this.valid) {
      this.gotoError();
      return;
    }
    this.textarea.value = JSON.stringify(this.result.value, null, 2);
    this.validate();
  }
}
