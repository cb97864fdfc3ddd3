// A notebook's figures are drawn for a wide Jupyter output area, so the page shows them scaled down; a click opens
// one at full size.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".cell_output img").forEach((img) => {
    const link = document.createElement("a");
    link.href = img.getAttribute("src");
    link.className = "full-size";
    link.title = "open at full size";
    img.replaceWith(link);
    link.append(img);
  });
});
