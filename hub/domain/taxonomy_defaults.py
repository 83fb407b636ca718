"""The clothing taxonomy every new shop starts with; shops edit it freely afterwards."""

CATEGORIES = (
    "Dresses", "Tops", "T-Shirts", "Shirts & Blouses", "Sweaters & Cardigans", "Hoodies & Sweatshirts",
    "Jackets & Coats", "Suits & Blazers", "Jeans", "Trousers", "Shorts", "Skirts", "Jumpsuits",
    "Activewear", "Swimwear", "Underwear & Sleepwear", "Shoes", "Bags", "Accessories",
)
STYLES = (
    "Casual", "Formal", "Business", "Sporty", "Streetwear", "Bohemian", "Vintage", "Minimalist",
    "Elegant", "Party", "Classic", "Romantic",
)
AGE_GROUPS = ("Babies (0-2)", "Kids (3-12)", "Teens (13-17)", "Adults (18+)", "Seniors (65+)")
