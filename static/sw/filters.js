// @ts-check
// Twins of the template filters in app/web/filters.py: same names, same output for the same
// input (tests/domain/test_filters.py runs both). Accepted formats, as there:
// - a datetime: YYYY-MM-DDTHH:MM[:SS[.fraction]][Z|+HH:MM|-HH:MM], no offset meaning UTC;
// - a date: any string without a "T" whose first ten characters are YYYY-MM-DD.
// Anything else is bad input and shows as "". Everything is shown in UTC.

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const DATETIME = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})?$/;
const DATE = /^([0-9]{4})-([0-9]{2})-([0-9]{2})$/;
const DAY_MS = 86400000;

/**
 * A moment: a UTC calendar day, with a time of day only for a datetime.
 * @typedef {{year: number, month: number, day: number, hour?: number, minute?: number}} Moment
 */

const pad2 = (n) => String(n).padStart(2, "0");

function daysIn(year, month) {
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  return [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
}

/** Python's date(year, month, day) accepts it. */
function validDay(year, month, day) {
  return year >= 1 && month >= 1 && month <= 12 && day >= 1 && day <= daysIn(year, month);
}

/** Milliseconds since 1970 of a UTC date and time (no two-digit-year surprise of Date.UTC). */
function utcMs(year, month, day, hour = 0, minute = 0, second = 0) {
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute, second, 0);
  return d.getTime();
}

/** @returns {Moment | null} */
function parse(value) {
  if (typeof value !== "string" || !value) return null;
  if (value.includes("T")) {
    const m = DATETIME.exec(value);
    if (!m) return null;
    const [year, month, day, hour, minute] = m.slice(1, 6).map(Number);
    const second = m[6] === undefined ? 0 : Number(m[6]);
    if (!validDay(year, month, day) || hour > 23 || minute > 59 || second > 59) return null;
    let offset = 0;
    const zone = m[7];
    if (zone !== undefined && zone !== "Z") {
      const oh = Number(zone.slice(1, 3)), om = Number(zone.slice(4, 6));
      if (oh > 23 || om > 59) return null;
      offset = (zone[0] === "-" ? -1 : 1) * (oh * 60 + om) * 60000;
    }
    const utc = new Date(utcMs(year, month, day, hour, minute, second) - offset);
    const y = utc.getUTCFullYear();
    if (y < 1 || y > 9999) return null; // Python: OverflowError, out of datetime's range
    return { year: y, month: utc.getUTCMonth() + 1, day: utc.getUTCDate(),
             hour: utc.getUTCHours(), minute: utc.getUTCMinutes() };
  }
  const m = DATE.exec(value.slice(0, 10));
  if (!m) return null;
  const [year, month, day] = m.slice(1, 4).map(Number);
  return validDay(year, month, day) ? { year, month, day } : null;
}

const isDatetime = (moment) => moment !== null && moment.hour !== undefined;

function showDate(moment) {
  return `${moment.day} ${MONTHS[moment.month - 1]} ${moment.year}`;
}

/** 21 Nov 2026 */
export function formatDate(value) {
  const moment = parse(value);
  return moment === null ? "" : showDate(moment);
}

/** 21 Nov 2026 10:04 (UTC) */
export function formatDatetime(value) {
  const moment = parse(value);
  if (!isDatetime(moment)) return formatDate(value);
  return `${showDate(moment)} ${pad2(moment.hour)}:${pad2(moment.minute)}`;
}

export function formatTime(value) {
  const moment = parse(value);
  return isDatetime(moment) ? `${pad2(moment.hour)}:${pad2(moment.minute)}` : "";
}

/**
 * Age in years, or months under two, or days under two months.
 * @param {unknown} value
 * @param {string} [today] YYYY-MM-DD (tests fix it); anything else throws, as in Python.
 */
export function age(value, today) {
  const born = parse(value);
  if (born === null) return "";
  let now;
  if (today) {
    const m = DATE.exec(String(today));
    const [year, month, day] = m ? m.slice(1, 4).map(Number) : [0, 0, 0];
    if (!validDay(year, month, day)) throw new RangeError(`today must be YYYY-MM-DD, not ${today}`);
    now = { year, month, day };
  } else {
    const d = new Date();
    now = { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() };
  }
  const months = (now.year - born.year) * 12 + now.month - born.month
    - (now.day < born.day ? 1 : 0);
  if (months >= 24) return `${Math.floor(months / 12)} y`;
  if (months >= 2) return `${months} mo`;
  const days = utcMs(now.year, now.month, now.day) - utcMs(born.year, born.month, born.day);
  return `${days / DAY_MS} d`;
}

/** Python's str() of a finite float that is not a whole number (repr: shortest round trip). */
function pythonFloat(x) {
  const [mantissa, exp] = x.toExponential().split("e");
  const e = Number(exp);
  const digits = mantissa.replace("-", "").replace(".", "");
  const sign = x < 0 ? "-" : "";
  if (e < -4 || e >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${e < 0 ? "-" : "+"}${pad2(Math.abs(e))}`;
  }
  if (e < 0) return `${sign}0.${"0".repeat(-e - 1)}${digits}`;
  return `${sign}${digits.slice(0, e + 1).padEnd(e + 1, "0")}.${digits.slice(e + 1)}`;
}

/** A measurement without a pointless trailing .0; anything but a number or a string is "". */
export function number(value) {
  if (typeof value === "string") return value;
  if (typeof value !== "number" || !Number.isFinite(value)) return "";
  if (Number.isInteger(value)) return BigInt(value).toString();
  return pythonFloat(value);
}

export const FILTERS = Object.freeze({
  date: formatDate, datetime: formatDatetime, time: formatTime, age, number,
});
