/**
 * Progressive enhancement of the browse page (which works without it): a grid thumbnail that
 * fails to load is replaced by a message with a Retry button.
 */

function failed(card, image) {
  card.classList.add("thumb-failed");
  let box = card.querySelector(".thumb-error");
  if (!box) {
    box = document.createElement("div");
    box.className = "thumb-error";
    box.setAttribute("role", "alert");
    const text = document.createElement("span");
    text.textContent = "Thumbnail failed to load.";
    const retry = document.createElement("button");
    retry.type = "button";
    retry.textContent = "Retry";
    retry.setAttribute("aria-label", `Retry the thumbnail of ${card.dataset.case}`);
    retry.addEventListener("click", () => {
      card.classList.remove("thumb-failed");
      box.hidden = true;
      const url = image.getAttribute("src");
      image.removeAttribute("src");
      image.src = url; // an image that failed is not cached: this fetches it again
    });
    box.append(text, retry);
    card.append(box); // beside the link, not inside it: a button may not sit in an <a>
  }
  box.hidden = false;
}

for (const card of document.querySelectorAll("#case-grid .card")) {
  const image = card.querySelector("img");
  if (!image) continue;
  image.addEventListener("error", () => failed(card, image));
  image.addEventListener("load", () => card.classList.remove("thumb-failed"));
  // An image may have failed before this module ran.
  if (image.complete && image.getAttribute("src") && image.naturalWidth === 0) failed(card, image);
}
