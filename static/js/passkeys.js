// @ts-check
// Passkeys: signing in with one (sign-in page) and adding one (account page), through plain
// WebAuthn. The server sends py_webauthn's JSON options (binary values as base64url) and
// checks the answers; this file only converts between JSON and the browser's ArrayBuffers.
// Listeners sit on the document, so buttons that htmx swaps in work without inline script.

const PASSKEY_NOT_USED =
  "The passkey was not used: it was cancelled, it timed out, or your device could not confirm " +
  "that it is you. Nothing was changed. Try again, or use your password and code.";
const SERVER_UNREACHABLE =
  "The server could not be reached, so nothing was changed. Check the connection and try again.";
const TOO_MANY = "Too many attempts in a short time. Nothing was changed. Wait a minute and try again.";

/** @param {string} text base64url, no padding */
function fromBase64url(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0)).buffer;
}

/** @param {ArrayBuffer | ArrayBufferView | null} data */
function toBase64url(data) {
  if (!data) return null;
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data)
    : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let binary = "";
  bytes.forEach((b) => { binary += String.fromCharCode(b); });
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

class ServerRefusal extends Error {}

/**
 * The CSRF token rendered with the element itself: after htmx swaps a page in (signing out,
 * for one) the <meta> in <head> still holds the previous session's token.
 * @param {Element} element
 */
function csrfTokenFor(element) {
  const own = element.closest("[data-csrf]");
  if (own) return own.getAttribute("data-csrf") || "";
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute("content") || "" : "";
}

/** POST JSON with the CSRF token; the server's JSON answer, or a ServerRefusal. */
async function postJson(url, body, csrfToken) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json",
                 "X-CSRFToken": csrfToken },
      body: JSON.stringify(body),
    });
  } catch {
    throw new ServerRefusal(SERVER_UNREACHABLE);
  }
  if (response.status === 429) throw new ServerRefusal(TOO_MANY);
  const answer = await response.json().catch(() => null);
  if (!response.ok || !answer) {
    throw new ServerRefusal((answer && answer.message) ||
      `The server answered ${response.status}. Nothing was changed. Try again.`);
  }
  return answer;
}

/** The PRF extension asks the authenticator for a secret tied to this passkey and salt. */
function prfExtension(saltBase64url) {
  return saltBase64url ? { prf: { eval: { first: fromBase64url(saltBase64url) } } } : {};
}

/** @param {PublicKeyCredential} credential @returns {ArrayBuffer|null} */
function prfOutput(credential) {
  const results = credential.getClientExtensionResults();
  const first = results && results.prf && results.prf.results && results.prf.results.first;
  if (!first) return null;
  return first instanceof ArrayBuffer ? first : asArrayBuffer(first);
}

/**
 * Hand the passkey's PRF output to the service worker, which can then unlock this device's
 * encrypted store with the passkey too. Only the worker receives it: it never goes to the
 * server. The salt says which output it is (the worker takes only this person's).
 */
function sendPrf(credential, userId, salt) {
  const prf = prfOutput(credential);
  if (!prf || !salt) return;
  navigator.serviceWorker?.controller?.postMessage({
    type: "passkey-prf", user_id: userId, credential_id: credential.id, salt, prf,
  });
}

/**
 * The device's unlock screen: the passkey's PRF output opens this person's records without a
 * connection (the worker holds the key it unwraps). No server checks this assertion, so its
 * challenge is only random bytes; the authenticator still verifies the person.
 * @param {HTMLElement} container
 * @param {HTMLButtonElement} button
 */
async function unlockWithPasskey(container, button) {
  const errorBox = container.querySelector("[data-passkey-error]");
  if (errorBox) errorBox.hidden = true;
  const controller = navigator.serviceWorker?.controller;
  if (!window.PublicKeyCredential || !controller) {
    showError(errorBox, "This browser cannot use a passkey here. Use your password.");
    return;
  }
  button.disabled = true;
  try {
    const ids = (container.dataset.credentials || "").split(" ").filter(Boolean);
    const credential = /** @type {PublicKeyCredential} */ (await navigator.credentials.get({
      publicKey: {
        challenge: crypto.getRandomValues(new Uint8Array(32)),
        rpId: location.hostname,
        allowCredentials: ids.map((id) => ({ type: "public-key", id: fromBase64url(id) })),
        userVerification: "required",
        timeout: 60_000,
        extensions: prfExtension(container.dataset.salt || ""),
      },
    }));
    const prf = prfOutput(credential);
    if (!prf) {
      showError(errorBox, "This passkey cannot unlock the device. Use your password; nothing was changed.");
      button.disabled = false;
      return;
    }
    const channel = new MessageChannel();
    const answer = await new Promise((resolve) => {
      channel.port1.onmessage = (event) => resolve(event.data);
      controller.postMessage({ type: "passkey-unlock", user_id: userIdOnPage(), credential_id: credential.id, prf },
        [channel.port2]);
    });
    if (answer && answer.ok) {
      window.location.assign(container.dataset.next || "/");
      return;
    }
    showError(errorBox, (answer && answer.message) || PASSKEY_NOT_USED);
  } catch (error) {
    showError(errorBox, messageFor(error));
  }
  button.disabled = false;
}

function userIdOnPage() {
  return document.querySelector('meta[name="clinic-user"]')?.getAttribute("content") || "";
}

/** @param {ArrayBufferView} view */
function asArrayBuffer(view) {
  return view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength);
}

function showError(box, message) {
  if (!box) return;
  box.textContent = message;
  box.hidden = false;
}

function messageFor(error) {
  if (error instanceof ServerRefusal) return error.message;
  if (error && error.name === "InvalidStateError") {
    return "This device already holds a passkey for your account. Nothing was changed.";
  }
  return PASSKEY_NOT_USED;
}

/**
 * The credential as the server reads it (py_webauthn's JSON). Extension results stay on the
 * device: the PRF output is the key to its records and never goes to the server.
 * @param {PublicKeyCredential} credential
 * @param {Record<string, any>} fields what this ceremony's response adds
 */
function credentialJson(credential, fields) {
  return {
    id: credential.id, rawId: toBase64url(credential.rawId), type: credential.type,
    authenticatorAttachment: credential.authenticatorAttachment,
    clientExtensionResults: {},
    response: { clientDataJSON: toBase64url(credential.response.clientDataJSON), ...fields },
  };
}

async function signInWithPasskey(container, button) {
  const errorBox = container.querySelector("[data-passkey-error]");
  if (errorBox) errorBox.hidden = true;
  if (!window.PublicKeyCredential) {
    showError(errorBox, "This browser cannot use passkeys. Use your password and code.");
    return;
  }
  const usernameField = /** @type {HTMLInputElement | null} */ (document.getElementById("username"));
  button.disabled = true;
  try {
    const options = await postJson("/login/passkey/options", {
      username: usernameField ? usernameField.value.trim() : "",
      next: container.dataset.next || "",
    }, csrfTokenFor(container));
    const publicKey = options.publicKey;
    const credential = /** @type {PublicKeyCredential} */ (await navigator.credentials.get({
      publicKey: {
        ...publicKey,
        challenge: fromBase64url(publicKey.challenge),
        allowCredentials: (publicKey.allowCredentials || []).map(
          (c) => ({ ...c, id: fromBase64url(c.id) })),
        extensions: prfExtension(options.prf_salt),
      },
    }));
    const response = /** @type {AuthenticatorAssertionResponse} */ (credential.response);
    const answer = await postJson("/login/passkey", {
      credential: credentialJson(credential, {
        authenticatorData: toBase64url(response.authenticatorData),
        signature: toBase64url(response.signature),
        userHandle: toBase64url(response.userHandle),
      }),
    }, csrfTokenFor(container));
    sendPrf(credential, answer.user_id, options.prf_salt);
    window.location.assign(answer.redirect || "/");
  } catch (error) {
    showError(errorBox, messageFor(error));
    button.disabled = false;
  }
}

async function addPasskey(form) {
  const errorBox = form.closest("section")?.querySelector("[data-passkey-error]");
  if (errorBox) errorBox.hidden = true;
  if (!window.PublicKeyCredential) {
    showError(errorBox, "This browser cannot make passkeys. Nothing was changed.");
    return;
  }
  const submit = form.querySelector("button[type=submit]");
  if (submit) submit.disabled = true;
  const data = new FormData(form);
  try {
    const options = await postJson("/account/passkeys/options", {
      name: String(data.get("name") || ""), code: String(data.get("code") || ""),
    }, csrfTokenFor(form));
    const publicKey = options.publicKey;
    const credential = /** @type {PublicKeyCredential} */ (await navigator.credentials.create({
      publicKey: {
        ...publicKey,
        challenge: fromBase64url(publicKey.challenge),
        user: { ...publicKey.user, id: fromBase64url(publicKey.user.id) },
        excludeCredentials: (publicKey.excludeCredentials || []).map(
          (c) => ({ ...c, id: fromBase64url(c.id) })),
        extensions: prfExtension(options.prf_salt),
      },
    }));
    const response = /** @type {AuthenticatorAttestationResponse} */ (credential.response);
    const answer = await postJson("/account/passkeys", {
      credential: credentialJson(credential, {
        attestationObject: toBase64url(response.attestationObject),
        transports: response.getTransports ? response.getTransports() : [],
      }),
    }, csrfTokenFor(form));
    // Some authenticators give the PRF output at creation already; others only at sign-in.
    sendPrf(credential, answer.user_id, options.prf_salt);
    window.location.assign(answer.redirect || "/account");
  } catch (error) {
    showError(errorBox, messageFor(error));
    if (submit) submit.disabled = false;
  }
}

document.addEventListener("click", (event) => {
  const unlock = /** @type {Element} */ (event.target).closest?.("[data-passkey-unlock-button]");
  const unlockBox = unlock && unlock.closest("[data-passkey-unlock]");
  if (unlock && unlockBox) {
    event.preventDefault();
    unlockWithPasskey(/** @type {HTMLElement} */ (unlockBox), /** @type {HTMLButtonElement} */ (unlock));
    return;
  }
  const button = /** @type {Element} */ (event.target).closest?.("[data-passkey-sign-in-button]");
  const container = button && button.closest("[data-passkey-sign-in]");
  if (button && container) {
    event.preventDefault();
    signInWithPasskey(container, button);
  }
});

document.addEventListener("submit", (event) => {
  const form = /** @type {HTMLFormElement} */ (event.target);
  if (form.matches && form.matches("form[data-passkey-register]")) {
    event.preventDefault();
    addPasskey(form);
  }
});
