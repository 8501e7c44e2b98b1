"""CRM adapters behind one small interface (:class:`aftercall.crm.base.Crm`)."""
