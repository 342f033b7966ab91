"""Building shareable browse URLs: the current query with one parameter changed."""

from django import template

register = template.Library()


@register.simple_tag(takes_context=True)
def query_with(context, **changes) -> str:
    """The current query string with each ``name=value`` set (``None`` removes it); the page
    number is dropped because any filter change starts at page 1."""
    query = context["request"].GET.copy()
    query.pop("page", None)
    for name, value in changes.items():
        if value is None or value == "":
            query.pop(name, None)
        else:
            query[name] = value
    encoded = query.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.simple_tag(takes_context=True)
def query_toggle(context, name: str, value) -> str:
    """Add ``value`` to the repeatable parameter ``name``, or remove it if present."""
    query = context["request"].GET.copy()
    query.pop("page", None)
    values = query.getlist(name)
    value = str(value)
    values = [v for v in values if v != value] if value in values else [*values, value]
    query.setlist(name, values)
    encoded = query.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.simple_tag(takes_context=True)
def page_url(context, number: int) -> str:
    query = context["request"].GET.copy()
    query["page"] = number
    return f"?{query.urlencode()}"


@register.filter
def in_list(value, values) -> bool:
    return str(value) in [str(v) for v in values]


@register.filter
def get_item(mapping, key):
    return mapping.get(key, 0) if mapping else 0
