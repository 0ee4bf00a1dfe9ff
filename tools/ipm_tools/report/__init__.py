"""ipm-report: maintenance, audit and site reports in the customer's or site's language."""
