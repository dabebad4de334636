// The dashboard's entry point: sign-in (the key lives in this tab's sessionStorage), and
// the views by the address's fragment: #/ the jobs, #/jobs/<id> one job, #/new the forms.

import { onUnauthorized, request, session } from "./api.js";
import { errorView, fill, h } from "./dom.js";
import { NewPage } from "./forms.js";
import { JobPage } from "./job_page.js";
import { JobsList } from "./jobs_list.js";

const $ = (selector) => document.querySelector(selector);
const signedInOnly = ["#app", "#nav", "#sign-out"].map($);

let list = null;
let page = null;

function showSignIn(error) {
  list?.stop();
  page?.stop();
  list = page = null;
  for (const element of signedInOnly) element.hidden = true;
  $("#sign-in").hidden = false;
  fill($("#sign-in-error"), error ? errorView(error) : null);
  $("#api-key").focus();
}

function showApp() {
  $("#sign-in").hidden = true;
  for (const element of signedInOnly) element.hidden = false;
  list = new JobsList($("#jobs-panel"));
  route();
}

function route() {
  if (!list) return;
  page?.stop();
  page = null;
  const job = /^#\/jobs\/(.+)$/.exec(location.hash);
  const refreshList = () => list.refresh();
  if (job) {
    const id = decodeURIComponent(job[1]);
    page = new JobPage(id, refreshList);
    list.select(id);
  } else if (location.hash === "#/new") {
    page = new NewPage($("#new-view"), refreshList);
    list.select(null);
  } else {
    list.select(null);
  }
  fill(
    $("#view"),
    page?.element ??
      h(
        "div",
        { class: "card" },
        h("p", { class: "muted" }, "Choose a job to see its curves, log and downloads, or ", h("a", { href: "#/new" }, "upload data and create a job"), "."),
      ),
  );
}

$("#sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("#api-key");
  const button = event.target.querySelector("button");
  const key = input.value.trim();
  if (!key) return;
  button.disabled = true;
  fill($("#sign-in-error"));
  try {
    await request("v1/models", { key }); // any call the key may make: is it valid?
    session.signIn(key);
    input.value = "";
    showApp();
  } catch (error) {
    fill($("#sign-in-error"), errorView(error));
  } finally {
    button.disabled = false;
  }
});

$("#sign-out").addEventListener("click", () => {
  session.signOut();
  showSignIn();
});

// The key was revoked (or the server's keys changed) while signed in.
onUnauthorized((error) => {
  session.signOut();
  showSignIn({ ...error, message: `Signed out: ${error.message}` });
});

window.addEventListener("hashchange", route);
if (session.key) showApp();
else showSignIn();
